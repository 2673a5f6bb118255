"""
C{midjobs-db} as an operator runs it: a subprocess against the private
PostgreSQL server, a fresh database per test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg

from midjobs.store.pg_schema import PARTS

if TYPE_CHECKING:
    from postgres_server import PostgresServer

pytest_plugins = ["postgres_server"]

ROOT = Path(__file__).parent.parent


def midjobs_db(*args: str) -> subprocess.CompletedProcess[str]:
    """
    Run C{midjobs-db} (this tree's) with C{args}.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "midjobs.dbtool", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=60, check=False)


def test_migrate_then_status(postgres_server: PostgresServer, postgres_database: str) -> None:
    before = midjobs_db("status", "--database", postgres_database)
    assert before.returncode == 0, before.stderr
    lines = before.stdout.splitlines()
    assert lines[0].split() == ["PART", "DATABASE", "MIDJOBS"]
    assert [line.split()[:3] for line in lines[1:]] == [[name, "0", str(len(s))] for name, s in PARTS.items()]
    assert all(line.endswith("to migrate") for line in lines[1:])

    done = midjobs_db("migrate", "--database", postgres_database)
    assert done.returncode == 0, done.stderr
    assert postgres_server.password not in done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        f"Migrated postgresql://{postgres_server.user}@127.0.0.1:{postgres_server.port}/"
        f"{postgres_database.rsplit('/', 1)[1]}",
        *(f"{name}: version {len(s)} ({len(s)} statement(s) applied)" for name, s in PARTS.items()),
    ]
    again = midjobs_db("migrate", "--database", postgres_database)
    assert again.returncode == 0 and "jobs: version" in again.stdout and "(0 statement(s) applied)" in again.stdout
    after = midjobs_db("status", "--database", postgres_database)
    assert all(line.endswith("up to date") for line in after.stdout.splitlines()[1:])


def test_a_newer_database_is_refused(postgres_database: str) -> None:
    assert midjobs_db("migrate", "--database", postgres_database).returncode == 0
    with psycopg.connect(postgres_database) as conn:
        conn.execute("UPDATE schema_version SET version = version + 1 WHERE name = 'cluster'")
    known = len(PARTS["cluster"])
    refused = midjobs_db("migrate", "--database", postgres_database)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"midjobs-db: schema 'cluster' is at version {known + 1}, newer than this code ({known}): upgrade midjobs"
    )
    status = midjobs_db("status", "--database", postgres_database)
    assert status.returncode == 0
    assert status.stdout.splitlines()[-1].split()[:3] == ["cluster", str(known + 1), str(known)]
    assert status.stdout.splitlines()[-1].endswith("newer than this midjobs: upgrade midjobs")


def test_nodes_and_forgetting_an_offline_one(postgres_server: PostgresServer, postgres_database: str) -> None:
    none = midjobs_db("nodes", "--database", postgres_database)
    assert (none.returncode, none.stderr.strip()) == (
        1, "midjobs-db: The database has no cluster schema yet: run midjobs-db migrate")
    assert midjobs_db("migrate", "--database", postgres_database).returncode == 0
    assert midjobs_db("nodes", "--database", postgres_database).stdout.strip() == "No node has joined."
    now = time.time()
    with psycopg.connect(postgres_database) as conn:
        for name, state, age in (("n1", "ONLINE", 1), ("n2", "OFFLINE", 60), ("n3", "OFFLINE", 90)):
            conn.execute(
                "INSERT INTO nodes (name, advertise, state, heartbeat, started, host, pid, version) "
                "VALUES (%s, %s, %s, %s, %s, 'h', 1, '1')",
                (name, f"http://127.0.0.1:600{name[1]}", state, now - age, now - 100),
            )
        conn.execute("INSERT INTO node_commands (node, job_id, command, args, created) "
                     "VALUES ('n2', 7, 'abort', '{}', 0)")
        conn.execute("INSERT INTO jobs (id, method, state, record, node) VALUES (7, 'm', 'ABORTED', '{}', 'n2')")
        conn.execute("INSERT INTO jobs (id, method, state, record, node) VALUES (8, 'm', 'RUNNING', '{}', 'n3')")
    listed = midjobs_db("nodes", "--database", postgres_database)
    assert listed.returncode == 0
    rows = [line.split() for line in listed.stdout.splitlines()]
    assert rows[0] == ["NODE", "STATE", "ADVERTISE", "HOST", "PID", "LAST", "HEARTBEAT"]
    assert [row[:3] for row in rows[1:]] == [["n1", "ONLINE", "http://127.0.0.1:6001"],
                                            ["n2", "OFFLINE", "http://127.0.0.1:6002"],
                                            ["n3", "OFFLINE", "http://127.0.0.1:6003"]]
    # Ages by the database's clock: the heartbeat was written 60 s before "now".
    assert rows[2][-2:] == ["s", "ago"] and 60 <= int(rows[2][-3]) < 90

    for name, error in (
        ("n1", "The node 'n1' is ONLINE: stop it first, and wait until the others see it OFFLINE"),
        ("n3", "The node 'n3' still has 1 unfinished job(s) to be recorded as ABORTED"),
        ("n9", "There is no node named 'n9'"),
    ):
        refused = midjobs_db("nodes", "--database", postgres_database, "--forget", name)
        assert (refused.returncode, refused.stderr.strip()) == (1, f"midjobs-db: {error}")
    forgot = midjobs_db("nodes", "--database", postgres_database, "--forget", "n2")
    assert forgot.returncode == 0, forgot.stderr
    assert forgot.stdout.strip() == "Forgot the node 'n2'; its finished jobs stay listed."
    with psycopg.connect(postgres_database) as conn:
        assert conn.execute("SELECT name FROM nodes ORDER BY name").fetchall() == [("n1",), ("n3",)]
        assert conn.execute("SELECT count(*) FROM node_commands").fetchone() == (0,)
        assert conn.execute("SELECT id, node FROM jobs ORDER BY id").fetchall() == [(7, "n2"), (8, "n3")]


def test_an_unreachable_database_is_one_line(postgres_server: PostgresServer) -> None:
    wrong = postgres_server.url.replace(postgres_server.password, "not-the-password")
    failed = midjobs_db("status", "--database", wrong)
    assert failed.returncode == 1
    assert failed.stderr.startswith("midjobs-db: ") and len(failed.stderr.strip().splitlines()) == 1
    assert "not-the-password" not in failed.stderr + failed.stdout
    nonsense = midjobs_db("status", "--database", "host=x nonsense")
    assert (nonsense.returncode, nonsense.stderr.strip()) == (
        1, "midjobs-db: The database URL is not a PostgreSQL connection string")
