"""
What the job layer needs from a job history store.

The daemon ships two implementations: L{midjobs.store.jobs.SQLiteJobStore},
embedded, and L{midjobs.store.pg_jobs.PgJobStore}, on a PostgreSQL database
that several daemons share.  Either can take the other's place, because the
queue, the middleware and C{core.get_jobs} only ever call these methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Collection, Sequence

from zope.interface import Attribute, Interface

from ..lifecycle import JobRecord

if TYPE_CHECKING:
    from twisted.python.failure import Failure

#: Told of a durable write (L{IDurableWrites}): with C{None} once it is
#: durable, or with the L{Failure} that kept it from being written.
Written = Callable[["Failure | None"], None]

__all__ = ["IDurableWrites", "IJobIds", "IJobStore", "JobRecord", "StoreClosed", "Written"]


class StoreClosed(Exception):
    """
    A write came after L{IJobStore.stop}.
    """


class IJobStore(Interface):
    """
    Durable job records: every non-transient job from its creation to its end.

    All methods are called on the reactor thread and never block it: they
    return Deferreds and do their I/O elsewhere.  Writes are applied in the
    order they are made, and the Deferreds of writes fire in that order.
    """

    flush_interval = Attribute(
        "The most seconds a change given to L{record_changed} waits before it is written (a float)."
    )

    def setup(logs_dir: Any = None) -> Any:
        """
        Create or migrate what the store needs.  A Deferred firing with C{None}.

        C{logs_dir} (a L{pathlib.Path}) is where the daemon keeps job logs.
        The log of a stored job is L{midjobs.log_files.log_file} of it and the
        job's id, whatever path was stored: the records the store gives show
        that path (or none, without C{logs_dir}), and the files it reads are
        those, because a restored backup may hold any path.
        """

    def last_id() -> Any:
        """
        A Deferred firing with the highest job id ever stored (C{0} for none),
        including the ids of records since pruned: the next job is numbered
        above it, so ids are never given twice.
        """

    def abort_unfinished(error: str, node: str | None = None) -> Any:
        """
        Record every job stored as C{WAITING} or C{RUNNING} as C{ABORTED} with
        C{error}, C{time_finished} now and, if it kept logs, its
        C{logs_excerpt} (read from the file its id gives, see L{setup}).
        Called at start, before any job is queued: such jobs were cut off
        when the daemon stopped.  A Deferred firing with how many there were.

        C{node} limits this to the jobs of that node (the C{node} of their
        records) in a store several daemons share; a store of one daemon
        ignores it.
        """

    def get(job_id: int) -> Any:
        """
        A Deferred firing with the stored record of job C{job_id}, or C{None}
        if it is not stored (or not yet durable).
        """

    def record_created(job_id: int, record: JobRecord | Callable[[], JobRecord]) -> Any:
        """
        Store the new job C{job_id}.  C{record} is its record, or a function
        that builds it when it is written (the newest state is stored then).

        A Deferred firing with C{None} once the record is durable (committed),
        or failing if it cannot be: nobody may hear of the job before.
        """

    def record_changed(job_id: int, record: Callable[[], JobRecord]) -> None:
        """
        Note that job C{job_id} changed (state, progress, description).

        C{record} is called to build the record when it is written, at most
        L{flush_interval} seconds later and together with other writes, so a
        burst of changes costs one record.  Nobody waits for it; a change
        noted after L{record_finished} for the same job is ignored.
        """

    def note_id(job_id: int) -> None:
        """
        A job that is not stored (a transient one) took C{job_id}: keep it
        from being given again after a restart.  Written with the next batch.
        """

    def record_finished(record: JobRecord) -> Any:
        """
        Store the final record of a job (C{state} C{SUCCESS}, C{FAILED} or
        C{ABORTED}).  A Deferred firing with C{None} once it is durable, with
        the job's log file (C{logs_path}) flushed to disk first; the end of a
        job must not be told before.
        """

    def query(filters: Any, options: Any, exclude_ids: Collection[int]) -> Any:
        """
        The stored records that match C{filters}, leaving out the ids in
        C{exclude_ids} (the jobs the caller has fresher records of).

        C{filters} are already valid (C{docs/protocol.rst}, "Querying"), C{options} a
        L{midjobs.query.QueryOptions}.  With C{options.count}, a Deferred
        firing with the number of matches.  Otherwise a Deferred firing with
        a list, in id order, of the matches at positions C{options.offset}
        to C{options.offset + options.limit} (C{+ 1} with C{options.get};
        to the end without a limit) in C{options.order_by} order, ties by
        id: the caller merges them with its own (L{midjobs.store.history}).
        C{options.select} is not applied.
        """

    def prune(finished_before: float, max_records: int) -> Any:
        """
        Delete the finished jobs that ended before C{finished_before} (seconds
        since the epoch), then the oldest finished ones until at most
        C{max_records} remain.  A Deferred firing with the ids of the deleted
        jobs that kept logs, whose log files the caller deletes.
        """

    def delete(job_ids: Sequence[int]) -> Any:
        """
        Delete the finished jobs among C{job_ids} (C{core.job_delete},
        C{core.jobs_prune}); ids of jobs that are not stored, or stored as
        C{WAITING} or C{RUNNING}, are left alone.  A few hundred rows at a
        time, each batch one statement in its own transaction, so the jobs'
        own writes go in between.  A Deferred firing with how many rows were
        deleted; the caller deletes their log files.
        """

    def stop() -> Any:
        """
        Write what is pending and refuse further writes (L{StoreClosed}).
        A Deferred firing once everything is written.
        """


class IDurableWrites(Interface):
    """
    L{IJobStore.record_created} and L{IJobStore.record_finished}, told by a
    call instead of a Deferred: the job queue's way, where a Deferred for
    each write is much of what recording a short job costs.  A store that
    groups its writes (L{midjobs.store.WriteBatch}) provides it.

    C{written} is called on the reactor thread, in the order the writes
    were made, and never from within the method: with C{None} once the
    record is durable, or with the L{twisted.python.failure.Failure} why it
    is not (L{StoreClosed} after L{IJobStore.stop}).
    """

    def created(job_id: int, record: JobRecord | Callable[[], JobRecord], written: Written) -> None:
        """
        L{IJobStore.record_created}, telling C{written}.
        """

    def finished(record: JobRecord, written: Written) -> None:
        """
        L{IJobStore.record_finished}, telling C{written}.
        """


class IJobIds(Interface):
    """
    Where new jobs get their ids: unique among every job a store has held,
    and, in a store several daemons share, among those of every daemon.

    L{take} is synchronous, so queueing a job costs no round trip: an
    implementation keeps ids at hand (a block taken ahead from a shared
    sequence, say) and says when it has none.
    """

    def start() -> Any:
        """
        A Deferred firing once L{take} has ids to give: called once, before
        the first job is queued.
        """

    def take() -> int | None:
        """
        The next id, or C{None} when none is at hand: then L{available}
        says when there will be.
        """

    def available() -> Any:
        """
        A Deferred firing once L{take} will give an id.
        """

    def skipped(job_id: int) -> None:
        """
        Job C{job_id} is not stored (a transient job): its id must still
        never be given again, after a restart too.
        """
