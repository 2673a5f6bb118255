"""
The settings of a node of a cluster: C{[database]} and C{[cluster]} in the
configuration file, C{--database}, C{--node} and C{--migrate-only} on the
command line, the URL the other nodes reach this one at, and a database
password that never shows.  And the cluster of a daemon alone
(L{LocalCluster}), as the RPC layer asks it of jobs not in memory.
"""

from __future__ import annotations

import datetime
import errno
import json
import socket
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from zope.interface.verify import verifyObject

from midjobs.client import Client
from midjobs.config import ConfigError, Settings
from midjobs.errors import CallError
from midjobs.interfaces import NODE_ONLINE, ICluster
from midjobs.job import Job, JobsQueue
from midjobs.local_cluster import LocalCluster
from midjobs.middleware import Middleware
from midjobs.plugins.system import SystemService
from midjobs.service import JobOptions
from midjobs.tap import Options

SECRET_URL = "postgresql://midjobs:hunter2@db.example.com:5433/jobs?sslmode=require&password=hunter2"


def from_toml(tmp_path: Path, text: str) -> Settings:
    path = tmp_path / "midjobs.toml"
    path.write_text(text)
    return Settings.from_toml(path)


def options(*arguments: str) -> Options:
    parsed = Options()
    parsed.parseOptions(list(arguments))
    return parsed


def test_the_defaults_are_one_node_on_sqlite() -> None:
    settings = Settings(state_dir="/srv/midjobs")
    assert settings.database_url is None
    assert settings.database_display == "/srv/midjobs/midjobs.db"
    assert settings.database_pool_size == 8
    assert settings.node == socket.gethostname()[:63]
    assert (settings.node_timeout, settings.id_block, settings.migrate_only) == (15.0, 16, False)


def test_the_file_names_the_database_and_the_node(tmp_path: Path) -> None:
    settings = from_toml(
        tmp_path,
        '[database]\nurl = "postgres://midjobs@db/jobs"\npool_size = 3\n'
        '[cluster]\nnode = "n1.rack-2_a"\nadvertise = "https://n1.example.com:6443"\n'
        "node_timeout = 2.5\nid_block = 64\n",
    )
    assert settings.database_url == "postgres://midjobs@db/jobs"
    assert settings.database_pool_size == 3
    assert settings.node == "n1.rack-2_a"
    assert settings.advertise_url() == "https://n1.example.com:6443"
    assert (settings.node_timeout, settings.id_block) == (2.5, 64)


@pytest.mark.parametrize(
    "text, message",
    [
        ('[database]\nurl = "mysql://u@h/db"', "database.url must be a postgresql:// or postgres:// URL"),
        ('[database]\nurl = "/var/lib/midjobs/midjobs.db"', "database.url must be a postgresql://"),
        ("[database]\nurl = 5", "database.url must be a postgresql://"),
        ("[database]\npool_size = 0", "database.pool_size must be a positive integer"),
        ('[cluster]\nnode = ""', "cluster.node must be 1 to 63 letters"),
        ('[cluster]\nnode = "n 1"', "cluster.node must be 1 to 63 letters"),
        ('[cluster]\nnode = "n/1"', "cluster.node must be 1 to 63 letters"),
        (f'[cluster]\nnode = "{"n" * 64}"', "cluster.node must be 1 to 63 letters"),
        ("[cluster]\nnode_timeout = 1", "cluster.node_timeout must be a number of seconds above 1"),
        ("[cluster]\nnode_timeout = -3", "cluster.node_timeout must be a positive number"),
        ('[cluster]\nadvertise = "n1:6000"', "cluster.advertise must be an http:// or https:// URL"),
        ('[cluster]\nadvertise = "http://:6000"', "cluster.advertise must name a host"),
        ("[cluster]\nid_block = 0", "cluster.id_block must be a positive integer"),
    ],
)
def test_bad_values_are_clear_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        from_toml(tmp_path, text)
    assert message in str(error.value)


def test_a_bad_url_is_refused_without_repeating_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        from_toml(tmp_path, '[database]\nurl = "mysql://midjobs:hunter2@db/jobs"')
    assert "hunter2" not in str(error.value)


def test_a_node_name_is_63_characters_at_most(tmp_path: Path) -> None:
    assert from_toml(tmp_path, f'[cluster]\nnode = "{"n" * 63}"').node == "n" * 63


def test_the_password_never_shows() -> None:
    settings = Settings(database_url=SECRET_URL)
    assert settings.database_display == "postgresql://midjobs@db.example.com:5433/jobs"
    assert "hunter2" not in repr(settings)
    assert Settings(database_url="postgres://db/jobs").database_display == "postgresql://db/jobs"
    assert Settings(database_url="postgresql://u:p@[::1]:5432/x").database_display == "postgresql://u@[::1]:5432/x"


@pytest.mark.parametrize(
    "listen, advertised",
    [
        (("tcp:6000:interface=127.0.0.1",), "http://127.0.0.1:6000"),
        (("tcp:port=6001:interface=192.0.2.7",), "http://192.0.2.7:6001"),
        (("tcp:6002:192.0.2.8",), "http://192.0.2.8:6002"),
        (("tcp6:6003:interface=\\:\\:1",), "http://[::1]:6003"),
        (("ssl:6443:interface=n1.example.com:certKey=/c.pem",), "https://n1.example.com:6443"),
        (("unix:/run/x.sock", "tcp:6004"), f"http://{socket.gethostname()}:6004"),
        (("tcp:6005:interface=0.0.0.0",), f"http://{socket.gethostname()}:6005"),
        (("tcp6:6006:interface=\\:\\:",), f"http://{socket.gethostname()}:6006"),
        (("unix:/run/x.sock",), None),
    ],
)
def test_the_advertised_url_comes_from_the_first_tcp_or_tls_listener(
    listen: tuple[str, ...], advertised: str | None
) -> None:
    assert Settings(listen=listen).advertise_url() == advertised
    assert Settings(listen=listen, advertise="http://lb.example:80").advertise_url() == "http://lb.example:80"


def test_the_command_line_names_the_database_and_the_node(tmp_path: Path) -> None:
    path = tmp_path / "midjobs.toml"
    path.write_text('[database]\nurl = "postgresql://file@db/jobs"\n[cluster]\nnode = "from-file"\n')
    settings = options("--config", str(path)).settings()
    assert (settings.database_url, settings.node, settings.migrate_only) == (
        "postgresql://file@db/jobs", "from-file", False
    )  # fmt: skip
    settings = options(
        "--config", str(path), "--database", "postgresql://cli@db/jobs", "--node", "n2", "--migrate-only"
    ).settings()
    assert (settings.database_url, settings.node, settings.migrate_only) == ("postgresql://cli@db/jobs", "n2", True)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--database", "sqlite:///x.db"], "--database must be a postgresql:// or postgres:// URL"),
        (["--node", "no spaces"], "--node must be 1 to 63 letters"),
    ],
)
def test_bad_command_line_values_are_usage_errors(arguments: list[str], message: str) -> None:
    with pytest.raises(usage.UsageError) as error:
        options(*arguments)
    assert str(error.value).startswith(message)


def test_the_help_tells_the_options() -> None:
    text = str(Options())
    for option in ("--database=", "--node=", "--migrate-only"):
        assert option in text


# The cluster of one node.


class Records:
    """
    A job store's L{midjobs.store.IJobStore.get}, over a dict.
    """

    def __init__(self, records: dict[int, dict[str, Any]]) -> None:
        self.records = records

    def get(self, job_id: int) -> Deferred[dict[str, Any] | None]:
        return succeed(self.records.get(job_id))


def result_of(d: Deferred[Any]) -> Any:
    seen: list[Any] = []
    d.addBoth(seen.append)
    assert seen, "the Deferred has not fired"
    return seen[0]


def test_one_node_lists_itself_online_with_its_running_jobs() -> None:
    reactor = MemoryReactorClock()
    queue = JobsQueue(node="n1")

    async def forever(job: Job) -> None:
        await Deferred()

    queue.add(Job(reactor, "t.forever", JobOptions(), forever, [], is_async=True))
    cluster = LocalCluster("n1", None, queue, "http://n1.example:6000")
    assert verifyObject(ICluster, cluster)
    before = datetime.datetime.now(datetime.timezone.utc)
    [node] = result_of(cluster.nodes())
    assert node.pop("heartbeat") >= before
    assert node == {"name": "n1", "advertise": "http://n1.example:6000", "state": NODE_ONLINE, "running_jobs": 1}


def test_one_node_reads_jobs_it_forgot_from_its_store_and_runs_no_other() -> None:
    record = {"id": 3, "state": "SUCCESS", "node": "n1"}
    cluster = LocalCluster("n1", Records({3: record}))  # type: ignore[arg-type]  # only get() is asked
    assert result_of(cluster.record(3)) == record
    assert result_of(cluster.record(4)) is None
    assert result_of(LocalCluster("n1", None).record(3)) is None
    for d in (cluster.abort(record, "stop"), cluster.wait(4)):
        error = result_of(d).value
        assert isinstance(error, CallError) and error.errno == errno.ENOENT


def test_the_debug_archive_shows_the_database_without_its_password(tmp_path: Path) -> None:
    settings = Settings(state_dir=str(tmp_path), database_url=SECRET_URL)
    middleware = Middleware(MemoryReactorClock(), tmp_path, settings=settings)
    config = SystemService(middleware)._config()
    assert config["database_url"] == "postgresql://midjobs@db.example.com:5433/jobs"
    assert "hunter2" not in json.dumps(config)
    alone = SystemService(Middleware(MemoryReactorClock(), tmp_path, settings=Settings(state_dir=str(tmp_path))))
    assert alone._config()["database_url"] is None


@pytest_twisted.ensureDeferred
async def test_a_daemon_alone_answers_cluster_nodes_and_system_info_with_its_node(admin_client: Client) -> None:
    (node,) = await admin_client.call("cluster.nodes")
    info = await admin_client.call("system.info")
    assert node["name"] == info["node"] == Settings().node
    assert node["state"] == NODE_ONLINE and node["running_jobs"] == 0
    assert isinstance(node["heartbeat"], datetime.datetime)
