"""
C{midjobs-db}: the PostgreSQL database of a cluster, from the command line.

    midjobs-db migrate --database URL           create or migrate every schema part
    midjobs-db status --database URL            each part's version, in the database and in this code
    midjobs-db nodes --database URL             the nodes and their state
    midjobs-db nodes --database URL --forget N  forget the OFFLINE node N

C{migrate} does what a node does when it starts, ahead of a rollout (nodes
starting together, or this command beside them, migrate one at a time).  The
URL may leave out the password: libpq then reads C{PGPASSWORD} or
C{~/.pgpass}, which keeps it off the command line.  Errors are one line on
standard error and exit status 1; the password is never printed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.task import react

from .store.database import Cursor, Row
from .store.errors import Unavailable
from .store.pg import PgDatabase

__all__ = ["main"]


class Refused(Exception):
    """
    The command cannot do what it was asked; its message says why.
    """


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="midjobs-db", description="The PostgreSQL database of a midjobs cluster.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (
        ("migrate", "create or migrate every schema part"),
        ("status", "each schema part's version, in the database and in this midjobs"),
        ("nodes", "the nodes of the cluster; --forget NAME forgets an OFFLINE one"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("--database", required=True, metavar="URL",
                             help="postgresql://user@host:port/dbname (the password from PGPASSWORD or ~/.pgpass)")
        if name == "nodes":
            command.add_argument("--forget", metavar="NAME", help="remove this OFFLINE node from the list")
    return parser


def _table(rows: Sequence[Sequence[object]]) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows)


async def migrate(db: PgDatabase) -> str:
    applied = await db.migrate()
    versions = await db.versions()
    lines = [f"{name}: version {versions[name][0]} ({count} statement(s) applied)" for name, count in applied.items()]
    return "\n".join([f"Migrated {db.safe_url}", *lines])


async def status(db: PgDatabase) -> str:
    rows: list[Sequence[object]] = [("PART", "DATABASE", "MIDJOBS", "")]
    for name, (stored, known) in (await db.versions()).items():
        if stored == known:
            state = "up to date"
        elif stored < known:
            state = "to migrate"
        else:
            state = "newer than this midjobs: upgrade midjobs"
        rows.append((name, stored, known, state))
    return _table(rows)


def _require_cluster(txn: Cursor) -> None:
    txn.execute("SELECT to_regclass('nodes') IS NOT NULL")
    row = txn.fetchone()
    if row is None or not row[0]:
        raise Refused("The database has no cluster schema yet: run midjobs-db migrate")


def _nodes(txn: Cursor) -> list[Row]:
    _require_cluster(txn)
    txn.execute(
        "SELECT name, state, advertise, host, pid, extract(epoch from clock_timestamp()) - heartbeat "
        "FROM nodes ORDER BY name"
    )
    return txn.fetchall()


async def nodes(db: PgDatabase) -> str:
    found = await db.runInteraction(_nodes)
    if not found:
        return "No node has joined."
    rows: list[Sequence[object]] = [("NODE", "STATE", "ADVERTISE", "HOST", "PID", "LAST HEARTBEAT")]
    for name, state, advertise, host, pid, age in found:
        rows.append((name, state, advertise, host, pid, f"{float(age):.0f} s ago"))
    return _table(rows)


def _forget(txn: Cursor, name: str) -> None:
    _require_cluster(txn)
    txn.execute("SELECT state FROM nodes WHERE name = ? FOR UPDATE", (name,))
    row = txn.fetchone()
    if row is None:
        raise Refused(f"There is no node named {name!r}")
    if row[0] != "OFFLINE":
        raise Refused(f"The node {name!r} is {row[0]}: stop it first, and wait until the others see it OFFLINE")
    txn.execute("SELECT count(*) FROM jobs WHERE node = ? AND state IN ('WAITING', 'RUNNING')", (name,))
    counted = txn.fetchone()
    if counted is not None and counted[0]:
        raise Refused(f"The node {name!r} still has {counted[0]} unfinished job(s) to be recorded as ABORTED")
    txn.execute("DELETE FROM node_commands WHERE node = ?", (name,))
    txn.execute("DELETE FROM nodes WHERE name = ?", (name,))


async def forget(db: PgDatabase, name: str) -> str:
    await db.runInteraction(_forget, name)
    return f"Forgot the node {name!r}; its finished jobs stay listed."


async def _run(reactor: Any, options: argparse.Namespace) -> None:
    try:
        db = PgDatabase(options.database, reactor, size=1, application_name="midjobs-db")
    except ValueError as e:
        raise Refused(str(e)) from None
    await db.open()
    try:
        if options.command == "migrate":
            text = await migrate(db)
        elif options.command == "status":
            text = await status(db)
        elif options.forget is not None:
            text = await forget(db, options.forget)
        else:
            text = await nodes(db)
    finally:
        await db.close()
    print(text)


async def _main(reactor: Any, options: argparse.Namespace) -> None:
    try:
        await _run(reactor, options)
    except (Refused, Unavailable, RuntimeError) as e:
        print(f"midjobs-db: {e}", file=sys.stderr)
        # react() exits with the code of a SystemExit.
        raise SystemExit(1) from None


def main(argv: Sequence[str] | None = None) -> None:
    """
    Run C{midjobs-db} with C{argv} (the command line's by default) and exit.
    """
    options = _parser().parse_args(argv)

    def run(reactor: Any) -> Deferred[None]:
        return Deferred.fromCoroutine(_main(reactor, options))

    # The pool's own warnings (each failed connection attempt) would repeat
    # the one line an error gets.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    react(run)


if __name__ == "__main__":
    main()
