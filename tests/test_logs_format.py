"""
The daemon's log as JSON lines (C{--log-format json}) and as journal lines
(under systemd): in memory from real log events, and from a real
C{twistd -n midjobs}.
"""

from __future__ import annotations

import json
import os
import re
import signal
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address
from twisted.logger import Logger, eventsFromJSONLogFile, formatEvent
from twisted.python.failure import Failure
from twisted.python.usage import UsageError

from midjobs.job import JobState
from midjobs.logs import LogDestination, format_journal_line, format_json_line, writes_to_journal
from midjobs.tap import Options
from test_midclt import midclt
from test_systemd_notify import notify_receiver, processes  # noqa: F401 (fixtures)
from test_twistd import twistd


def _events(emit: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    emit(Logger(namespace="midjobs.test", observer=events.append))
    return events


def test_json_line_has_the_fields_as_keys() -> None:
    address = IPv4Address("TCP", "192.0.2.7", 4242)
    [event] = _events(
        lambda log: log.info(
            "Job {job_id} ({method}) ended {state} for {username} from {address}",
            job_id=7, method="core.job_test", state=JobState.SUCCESS, username="alice", address=address,
            sizes=[1, 2], raw=b"\xff",
        )
    )
    line = format_json_line(event)
    assert line.endswith("\n") and "\n" not in line[:-1]
    record = json.loads(line)
    assert record["job_id"] == 7 and record["method"] == "core.job_test" and record["username"] == "alice"
    assert record["state"] == "SUCCESS"
    assert record["address"] == "IPv4Address(type='TCP', host='192.0.2.7', port=4242)"
    assert record["sizes"] == [1, 2] and record["raw"] == "\\xff"
    assert record["log_level"] == "info" and record["log_namespace"] == "midjobs.test"
    assert record["log_text"] == formatEvent(event)
    assert record["log_time"] == event["log_time"]
    assert record["log_format"].startswith("Job {job_id}")
    assert "log_logger" not in record and "log_source" not in record


def test_json_line_of_a_failure() -> None:
    try:
        raise ValueError("no such pool")
    except ValueError:
        failure = Failure()
    [event] = _events(lambda log: log.failure("Job {job_id} crashed", failure, job_id=3))
    record = json.loads(format_json_line(event))
    assert record["log_level"] == "critical" and record["job_id"] == 3
    assert record["log_failure"] == "ValueError: no such pool"
    assert record["log_text"].startswith("Job 3 crashed\n") and "Traceback" in record["log_text"]


def test_json_lines_read_back_as_events() -> None:
    events = _events(lambda log: (log.info("one {n}", n=1), log.warn("two {n}", n=2)))
    text = "".join(format_json_line(event) for event in events)
    read = list(eventsFromJSONLogFile(StringIO(text)))
    assert [(e["n"], e["log_level"], formatEvent(e)) for e in read] == [(1, "info", "one 1"), (2, "warn", "two 2")]


def test_json_line_of_an_event_that_refers_to_itself() -> None:
    loop: list[Any] = []
    loop.append(loop)
    [event] = _events(lambda log: log.info("a loop", loop=loop))
    record = json.loads(format_json_line(event))
    assert record["log_text"] == "a loop" and "log_json_error" in record


def test_journal_lines_carry_the_priority_and_no_time() -> None:
    def emit(log: Logger) -> None:
        log.debug("d")
        log.info("i {x}", x=1)
        log.warn("w")
        log.error("e")
        log.critical("c")

    lines = [format_journal_line(event) for event in _events(emit)]
    assert lines == [
        "<7>[midjobs.test#debug] d\n",
        "<6>[midjobs.test#info] i 1\n",
        "<4>[midjobs.test#warn] w\n",
        "<3>[midjobs.test#error] e\n",
        "<2>[midjobs.test#critical] c\n",
    ]


def test_every_line_of_a_traceback_has_the_priority() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failure = Failure()
    [event] = _events(lambda log: log.failure("crashed", failure))
    text = format_journal_line(event)
    assert text is not None and text.count("\n") > 3
    assert all(line.startswith("<2>") for line in text.splitlines())
    assert text.splitlines()[-1] == "<2>builtins.ValueError: boom"


def test_journal_is_the_stream_journal_stream_names(tmp_path: Path) -> None:
    with open(tmp_path / "out", "w") as out, open(tmp_path / "other", "w") as other:
        stat = os.fstat(out.fileno())
        environ = {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}
        assert writes_to_journal(environ, out)
        assert not writes_to_journal(environ, other)
        assert not writes_to_journal({}, out)
        assert not writes_to_journal({"INVOCATION_ID": "f00"}, out)
        assert not writes_to_journal({"JOURNAL_STREAM": "junk"}, out)
        assert not writes_to_journal(environ, StringIO())


class _Twistd(dict):
    """
    What twistd's options hold, for the plugin's to read.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__({"logger": None, "syslog": False, "logfile": None, "nodaemon": True, **options})


def _parse(twistd_options: _Twistd, *argv: str) -> Options:
    options = Options()
    options.parent = twistd_options
    options.parseOptions(list(argv))
    return options


def test_twistd_is_given_the_observer_for_json(tmp_path: Path) -> None:
    from midjobs import logs

    twistd_options = _Twistd(logfile="-")
    _parse(twistd_options, "--log-format", "json")
    assert twistd_options["logger"] == "midjobs.logs.observer"
    assert logs._destination == LogDestination(format="json", journal=False, path=None)

    config = tmp_path / "midjobs.toml"
    config.write_text('[daemon]\nlog_format = "json"\n')
    daemonised = _Twistd(nodaemon=False, logfile="midjobs.log")
    _parse(daemonised, "--config", str(config))
    assert daemonised["logger"] == "midjobs.logs.observer"
    assert logs._destination == LogDestination(format="json", path=os.path.abspath("midjobs.log"))


def test_twistd_keeps_its_own_text_file_or_the_observer_it_was_given() -> None:
    plain = _Twistd()
    _parse(plain)
    assert plain["logger"] is None
    chosen = _Twistd(logger="somewhere.observer")
    _parse(chosen, "--log-format", "json")
    assert chosen["logger"] == "somewhere.observer"
    syslog = _Twistd(syslog=True)
    _parse(syslog, "--log-format", "json")
    assert syslog["logger"] is None


def test_bad_log_format() -> None:
    with pytest.raises(UsageError, match="--log-format must be one of text, json"):
        _parse(_Twistd(), "--log-format", "yaml")


@pytest_twisted.ensureDeferred
async def test_twistd_writes_json_lines(tmp_path: Path, short_tmp: Path, processes: list[Any]) -> None:  # noqa: F811
    socket = short_tmp / "midjobs.sock"
    process = twistd(
        "--state-dir", str(tmp_path / "state"),
        "--listen", "tcp:0:interface=127.0.0.1",
        "--socket", str(socket),
        "--log-level", "debug",
        "--log-format", "json",
        path=tmp_path,
    )
    processes.append(process)
    port = await process.ready  # test_twistd.Twistd finds the lines in the JSON too
    out, err, code = await midclt("-u", f"ws+unix://{socket}", "call", "--job", "core.job_test", '{"sleep": 0}')
    assert code == 0, err
    out, err, code = await midclt("-u", f"ws+unix://{socket}", "call", "user.create", '{"username": "admin", "password": "s3cret", "roles": ["FULL_ADMIN"]}')
    assert code == 0, err
    out, err, code = await midclt("-u", f"ws://127.0.0.1:{port}/api/current", "-U", "admin", "-P", "wrong", "ping")
    assert code != 0
    process.transport.signalProcess(signal.SIGTERM)
    assert await process.ended == -signal.SIGTERM

    records = [json.loads(line) for line in process.output.decode().splitlines()]
    assert all({"log_time", "log_level", "log_text"} <= record.keys() for record in records)
    started = [r for r in records if r.get("log_format") == "Job {job_id} ({method}) started"]
    assert len(started) == 1 and started[0]["job_id"] == 1 and started[0]["method"] == "core.job_test"
    assert started[0]["log_level"] == "debug" and started[0]["log_text"] == "Job 1 (core.job_test) started"
    [failed] = [r for r in records if r["log_text"].startswith("Failed")]
    assert failed["username"] == "admin" and failed["source"] == "127.0.0.1" and failed["log_level"] == "info"
    listening = [r for r in records if r.get("endpoint") == "tcp:0:interface=127.0.0.1"]
    assert f"port={port}" in listening[0]["address"]
    assert any(r["log_text"] == "Received SIGTERM, shutting down." for r in records)


@pytest_twisted.ensureDeferred
async def test_twistd_under_the_journal(
    tmp_path: Path, short_tmp: Path, notify_receiver: Any, processes: list[Any]  # noqa: F811
) -> None:
    receiver, notify_path = notify_receiver
    # Standard output is a file JOURNAL_STREAM names, as journald's stream is.
    out = open(tmp_path / "journal", "wb")
    stat = os.fstat(out.fileno())
    config = tmp_path / "midjobs.toml"
    # More connections than descriptors: a warning.
    config.write_text("[limits]\nconnections = 100000000\n")
    process = twistd(
        "--state-dir", str(tmp_path / "state"),
        "--config", str(config),
        "--listen", "tcp:0:interface=127.0.0.1",
        "--socket", str(short_tmp / "midjobs.sock"),
        path=tmp_path,
        env={"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}", "NOTIFY_SOCKET": notify_path},
        fds={1: out.fileno(), 2: out.fileno()},
    )
    out.close()
    processes.append(process)
    process.ready.addErrback(lambda failure: None)
    process.ended.addCallback(receiver.sender_ended, process)
    await receiver.wait_for(receiver.sent("READY"))
    process.transport.signalProcess(signal.SIGTERM)
    assert await process.ended == -signal.SIGTERM

    lines = (tmp_path / "journal").read_text().splitlines()
    assert lines and all(re.match(r"<[0-7]>\[", line) for line in lines), lines
    assert "<6>[midjobs.daemon#info] midjobs is ready, state in " + str(tmp_path / "state") in lines
    assert any(line.startswith("<4>[midjobs.daemon#warn] [limits] connections = 100000000") for line in lines)
    # No time of its own: the journal stamps each line.
    assert not any(re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d", line) for line in lines)


def test_pythons_logging_reaches_the_daemons_log(log_events: list[dict[str, Any]]) -> None:
    """
    What a service logs with Python's logging (C{self.logger}, as in the
    original) becomes a twisted.logger event at the same level, with the
    traceback of an exception.
    """
    import logging

    from twisted.logger import LogLevel, formatEvent

    from midjobs.logs import StdlibBridge, set_level

    bridge = StdlibBridge.install()
    try:
        logging.getLogger("midjobs.services.replica").warning("copied %d files", 3)
        logging.getLogger("midjobs.services.replica").debug("not at info")
        try:
            raise OSError("disk gone")
        except OSError:
            logging.getLogger("plugin").exception("copy failed")
    finally:
        bridge.uninstall()
        set_level("info")
    mine = [e for e in log_events if e.get("log_namespace") in ("midjobs.services.replica", "plugin")]
    assert [(e["log_level"], formatEvent(e)) for e in mine] == [
        (LogLevel.warn, "copied 3 files"),
        (LogLevel.error, "copy failed"),
    ]
    assert mine[1]["log_failure"].check(OSError)
    logging.getLogger("plugin").error("after uninstall")
    assert len([e for e in log_events if e.get("log_namespace") == "plugin"]) == 1
