"""
C{core.*}: the job system's own methods, options and events.
"""

from __future__ import annotations

import errno
import math
import os
import re
from typing import Any, Callable, Hashable, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import blockingCallFromThread
from twisted.python.threadpool import ThreadPool

from ..errors import CallError, ValidationError, ValidationErrors
from ..events import UnknownEvent
from ..interfaces import IConnectionSession, ISession
from ..job import Job
from ..lifecycle import JobAborted, JobState
from ..log_events import JobLogEvents
from ..log_files import log_file
from ..access import JobAccessDenied, may_force_abort, owns_or_administers
from ..auth import TooManyTokens
from ..cluster.logs import IJobLogChunks, elsewhere
from ..arguments import REDACTED
from ..config import Settings
from ..logs import logger
from ..pipe import Pipes
from ..query import compile_filters, validate_options
from ..store import query_jobs
from ..store._slots import Slots
from ..service import Service, forwards, job, no_auth_required, no_authz_required, pass_app, private, secret_result
from .job_deletion import JobDeletion

_SESSION_OPTIONS = ("legacy_jobs", "private_methods", "py_exceptions")

#: How long the token of a download URL lives, in seconds (C{docs/protocol.rst}, "core.download and GET /_download/<job id>").
DOWNLOAD_TOKEN_TTL = 300

#: How much of a log file is read at once for a download.
_LOG_BLOCK = 256 * 1024

#: Threads that match C{core.get_jobs} queries over many jobs in memory.
QUERY_THREADS = 2

log = logger(__name__)

#: The error of a job a full administrator aborted with C{{"force": true}}.
FORCED_ABORT = "Job aborted by force"

#: The refusal of C{{"force": true}} to anyone but a full administrator.
FORCE_NOT_ALLOWED = "Only users with full administrative privileges can force the abort of a job"

#: The longest description C{core.bulk} builds for a step, in characters.
MAX_DESCRIPTION = 1024

#: What L{describe} replaces: C{{{}} and C{}}} (a literal brace), C{{}} and
#: C{{N}}.  Any other braces, with a format spec, a conversion, an attribute
#: or an index, are not matched and stay as they are.
_FIELD = re.compile(r"\{\{|\}\}|\{(\d{0,4})\}")


def _force_option(options: Any) -> bool:
    """
    The C{force} option of C{core.job_abort} (false if not given).

    @raise ValidationErrors: an unknown option, or C{force} not a boolean.
    """
    if options is None:
        return False
    errors = ValidationErrors()
    for name in options.keys() - {"force"}:
        errors.add(f"options.{name}", "Unknown option")
    force = options.get("force", False)
    if not isinstance(force, bool):
        errors.add("options.force", "Not a valid boolean")
    errors.check()
    return bool(force)


def _job_test_lock(args: list[Any]) -> str | None:
    data = args[0] if args else None
    return data.get("lock") if isinstance(data, dict) else None


def _bulk_lock(args: list[Any]) -> str | None:
    """
    The lock of a C{core.bulk} call, as in the original daemon: one bulk of a
    method at a time (C{bulk:<method>}).
    """
    return f"bulk:{args[0]}" if args and isinstance(args[0], str) else None


def _check_progress_update(data: Any) -> dict[str, Any] | None:
    """
    The C{progress} of C{core.job_update}'s C{data}, checked: C{None} when
    there is none (or it is empty), else a dict with C{percent} (a number)
    and, maybe, C{description} (a string or null) and C{extra} (any).

    @raise ValidationErrors: anything else.
    """
    errors = ValidationErrors()
    if not isinstance(data, dict):
        errors.add("data", "Must be an object")
        errors.check()
    for name in data.keys() - {"progress"}:
        errors.add(f"data.{name}", "Unknown key")
    progress = data.get("progress")
    if not progress:
        errors.check()
        return None
    if not isinstance(progress, dict):
        errors.add("data.progress", "Must be an object")
        errors.check()
    for name in progress.keys() - {"percent", "description", "extra"}:
        errors.add(f"data.progress.{name}", "Unknown key")
    percent = progress.get("percent")
    if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not math.isfinite(percent):
        errors.add("data.progress.percent", "Must be a number")
    description = progress.get("description")
    if description is not None and not isinstance(description, str):
        errors.add("data.progress.description", "Must be a string")
    errors.check()
    checked: dict[str, Any] = progress
    return checked


def _check_job_id(id: Any) -> None:
    if isinstance(id, bool) or not isinstance(id, int):
        raise ValidationErrors([ValidationError("id", "Must be a job id (an integer)")])


def _check_job_test_data(data: dict[str, Any], sleep: Any) -> None:
    errors = [
        ValidationError(f"data.{key}", "Unknown key")
        for key in data.keys() - {"sleep", "lock", "description", "error"}
    ]
    if isinstance(sleep, bool) or not isinstance(sleep, (int, float)) or sleep < 0:
        errors.append(ValidationError("data.sleep", "Must be a non-negative number"))
    if errors:
        raise ValidationErrors(errors)


def describe(template: str, arguments: Sequence[Any], limit: int = MAX_DESCRIPTION) -> str:
    """
    C{template} with plain positional fields replaced by C{str()} of
    C{arguments}: C{{0}}, C{{1}}, ..., and C{{}} for the next one in turn;
    C{{{}} and C{}}} stand for one brace.  Nothing else is interpreted: a
    field with a format spec (C{{0:>9}}), a conversion (C{{0!r}}), an
    attribute or an index (C{{0.x}}, C{{0[1]}}), a name (C{{x}}), or a
    number beyond the arguments stays in the text as it is, so that a
    template (chosen by a client) costs no more than its arguments' text.

    @param arguments: the arguments as records show them (secrets redacted).
    @return: at most C{limit} characters; a longer text is cut and ends with
        C{"…"}.
    """
    parts: list[str] = []
    size = 0
    position = 0
    automatic = 0
    for field in _FIELD.finditer(template):
        if size > limit:
            break
        parts.append(template[position:field.start()])
        text = field.group()
        if text == "{{":
            text = "{"
        elif text == "}}":
            text = "}"
        else:
            digits = field.group(1)
            if digits:
                index = int(digits)
            else:
                index, automatic = automatic, automatic + 1
            if index < len(arguments):
                text = str(arguments[index])[: limit + 1]
        parts.append(text)
        size += len(parts[-2]) + len(text)
        position = field.end()
    else:
        parts.append(template[position:])
    described = "".join(parts)
    if len(described) > limit:
        described = described[: limit - 1] + "…"
    return described


def _query_owner(app: ISession) -> Hashable:
    """
    Whose turn a query of C{app} takes (C{[limits] history_queries}): its
    user's stable identity, so that one user's queries wait for each other
    however many connections they come from.
    """
    user = app.user
    user_id = getattr(user, "user_id", None)
    if user_id is not None:
        return ("user", user_id)
    # The trusted local peer, or a login that names no stored user: the connection.
    return app


def _caller(app: ISession | None) -> dict[str, str | None]:
    """
    Who calls, as the log lines of a forced abort name them.
    """
    if app is None:
        return {"user": "the daemon", "address": "-"}
    return {"user": getattr(app.user, "username", None), "address": str(app.peer)}


def _outcome(record: dict[str, Any]) -> Any:
    """
    What waiting for the job whose final record is C{record} gives, as
    C{Job.wait(raise_error=True)} does for a job in memory: its result, or
    its error raised (L{JobAborted} if it was aborted).
    """
    state = JobState(record["state"])
    if state is JobState.SUCCESS:
        return record["result"]
    error = record.get("error") or "Job failed"
    if state is JobState.ABORTED:
        raise JobAborted(error)
    exc_info = record.get("exc_info")
    code = exc_info.get("errno") if isinstance(exc_info, dict) else None
    raise CallError(error, code if isinstance(code, int) else errno.EFAULT)


class CoreService(Service):
    namespace = "core"

    def __init__(self, middleware: Any) -> None:
        super().__init__(middleware)
        settings = middleware.settings if middleware.settings is not None else Settings()
        #: Each user's turns at C{core.get_jobs} (C{[limits] history_queries}).
        self._query_slots: Slots[Hashable] = Slots(settings.max_history_queries)
        #: Where queries over many jobs in memory are matched (from setup to stop).
        self._query_threads: ThreadPool | None = None
        self._default_timeout = settings.default_timeout
        #: What C{job_delete} and C{jobs_prune} do.
        self._deletion = JobDeletion(middleware, self._query_jobs)

    @no_auth_required
    async def ping(self) -> str:
        """
        Answer C{"pong"}: the daemon is there.
        """
        return "pong"

    @no_auth_required
    @pass_app
    async def set_options(self, app: IConnectionSession, options: dict[str, Any]) -> dict[str, Any]:
        """
        Set options of this connection and return the three now in force.

        C{legacy_jobs} (default true): a job method answers with its job id at
        once; false makes it answer with the job's result when it ends.
        C{private_methods} (default false): show private methods.
        C{py_exceptions}: accepted and ignored.
        """
        errors = ValidationErrors()
        for name, value in options.items():
            if name not in _SESSION_OPTIONS:
                errors.add(f"options.{name}", "Unknown option")
            elif not isinstance(value, bool):
                errors.add(f"options.{name}", "Not a valid boolean")
        errors.check()
        app.set_options(options)
        return app.options()

    @no_authz_required
    @pass_app
    async def subscribe(self, app: IConnectionSession, name: str) -> str:
        """
        Subscribe to the event C{name} (C{*} for all); return the subscription id.
        Each event goes only to those who may see it (their own jobs, for
        users without administrative roles).
        """
        try:
            await self.middleware.events.prepare(app, name)
            return app.subscribe(name)
        except UnknownEvent:
            raise CallError(f"Event {name!r} does not exist", errno.ENOENT) from None

    @no_authz_required
    @pass_app
    async def unsubscribe(self, app: IConnectionSession, id: str) -> None:
        """
        End the subscription C{id}.
        """
        if not app.unsubscribe(id):
            raise CallError(f"Subscription {id!r} does not exist", errno.ENOENT)

    @no_authz_required
    @pass_app
    async def get_jobs(self, app: ISession | None, filters: list[Any] | None = None, options: dict[str, Any] | None = None) -> Any:
        """
        The jobs, as records, filtered and shaped by C{filters} and C{options}
        (the query language of the protocol).  Finished jobs stay listed: from
        the job history (C{[jobs] keep_days}, C{keep_records}), or, without
        one, the newest C{[jobs] keep_finished} of them.  Users without
        administrative roles see only the jobs they started, and those of
        methods whose C{read_roles} they hold.

        One connection's queries run at most C{[limits] history_queries} at
        once; the others wait for their turn, behind that connection's own.
        """
        # Errors name the caller's own filters, before any of visibility.
        compile_filters(filters)
        validate_options(options)
        if app is None:
            return await self._query_jobs(filters, options)
        if app.user is not None:
            visible = self.middleware.visible_jobs_filter(app.user)
            if visible:
                filters = [*visible, *(filters or [])]
        owner = _query_owner(app)
        if self._query_slots.full(owner):
            self.middleware.metrics.limit_hit("history_queries")
        if self._query_slots.waiting(owner) == 0 and self._query_slots.full(owner):
            # Once a burst.
            log.info(
                "core.get_jobs of {user} from {address} waits: {limit} of their queries are running",
                user=getattr(app.user, "username", None),
                address=str(app.peer),
                limit=self._query_slots.limit,
            )
        return await self._query_slots.run(owner, self._query_jobs, filters, options, app)

    async def _query_jobs(self, filters: list[Any] | None, options: dict[str, Any] | None, app: ISession | None = None) -> Any:
        # The option {"extra": {"raw_result": true}}: results with their
        # secrets, of the caller's own jobs (any job, for a full administrator).
        raw = isinstance(options, dict) and isinstance(options.get("extra"), dict) and options["extra"].get("raw_result") is True
        user = app.user if app is not None else None
        records = [
            job.to_record(raw_result=raw and owns_or_administers(user, job.credentials))
            for job in self.middleware.jobs.listed()
        ]
        return await query_jobs(
            records,
            self.middleware.job_store,
            filters,
            options,
            reactor=self.middleware.reactor,
            threadpool=self._query_threads,
        )

    @no_authz_required
    @pass_app
    async def job_abort(self, app: ISession | None, id: int, options: dict[str, Any] | None = None) -> None:
        """
        Abort the job C{id}.  Only abortable jobs can be aborted, by the user
        who started them or a full administrator.

        With C{options} C{{"force": true}}, a full administrator aborts any
        job, abortable or not (logged with their name and address); anyone
        else gets C{EPERM}.  A running job that does not stop within
        C{midjobs.job.ABORT_GRACE} seconds is recorded ABORTED anyway, and its
        lock freed.
        """
        force = _force_option(options)
        target = self._job_here(id)
        if target is None:
            await self._abort_elsewhere(app, id, force)
            return
        self.middleware.check_job_access(app, target, change=True)
        if force:
            self._force_abort(app, target)
            return
        if not target.options.abortable and not target.state.finished:
            raise CallError("Job is not abortable", errno.EINVAL)
        target.abort()

    def _job_here(self, id: int) -> Job | None:
        """
        The job C{id} if it is in this daemon's memory.
        """
        try:
            return self.middleware.jobs.get(id)
        except CallError:
            return None

    async def _record_elsewhere(self, id: int) -> dict[str, Any]:
        """
        The record of job C{id}, which runs (or ran) on another node of the
        cluster (L{midjobs.interfaces.ICluster}).

        @raise CallError: C{ENOENT}, as for a job not in memory on one
            daemon: there is no such job, or it is this node's.
        """
        cluster = self.middleware.cluster
        record: dict[str, Any] | None = await cluster.record(id)
        if record is None or record.get("node") in (None, cluster.node):
            raise CallError(f"Job {id} does not exist", errno.ENOENT)
        return record

    async def _abort_elsewhere(self, app: ISession | None, id: int, force: bool) -> None:
        """
        L{job_abort} for a job of another node: the same checks on its
        record, then the abort goes to its node.
        """
        record = await self._record_elsewhere(id)
        self.middleware.check_job_access(app, record, change=True)
        finished = JobState(record["state"]).finished
        if force:
            self._check_force(app, id, record["method"])
            if finished:
                return
            self._log_forced(app, id, record["method"], record["abortable"], record["state"])
            reason = FORCED_ABORT
        else:
            if not record["abortable"] and not finished:
                raise CallError("Job is not abortable", errno.EINVAL)
            if finished:
                return
            reason = JobAborted().errmsg
        await self.middleware.cluster.abort(record, reason)

    def _check_force(self, app: ISession | None, id: int, method: str) -> None:
        """
        Refuse (and log) a forced abort to anyone but a full administrator.
        """
        user = app.user if app is not None else None
        if not may_force_abort(user):
            log.warn(
                "{user} from {address} may not force the abort of job {job_id} ({method})",
                job_id=id, method=method, **_caller(app),
            )  # fmt: skip
            raise JobAccessDenied(FORCE_NOT_ALLOWED)

    def _log_forced(self, app: ISession | None, id: int, method: str, abortable: bool, state: str) -> None:
        log.warn(
            "{user} from {address} forced the abort of job {job_id} ({method}, {abortable}) in state {state}",
            abortable="abortable" if abortable else "not abortable",
            state=state,
            job_id=id,
            method=method,
            **_caller(app),
        )

    def _force_abort(self, app: ISession | None, target: Job) -> None:
        self._check_force(app, target.id, target.method)
        if target.state.finished or target.ending:
            return
        self._log_forced(app, target.id, target.method, target.options.abortable, target.state.value)
        target.abort(FORCED_ABORT)

    @private
    async def job_update(self, id: int, data: dict[str, Any]) -> None:
        """
        Report the progress of job C{id} from elsewhere (a helper process, a
        plugin following another's work), as the original daemon's
        C{core.job_update}: C{data} is C{{"progress": {"percent": N,
        "description": "...", "extra": ...}}}; C{percent} is required, the
        others keep their value when left out, null or empty, and an empty
        C{progress} (or none) changes nothing.  A job that has ended keeps
        its progress.  Private: for full administrators, on a connection
        with C{private_methods}, and for the daemon's own code.
        """
        _check_job_id(id)
        progress = _check_progress_update(data)
        target = self.middleware.jobs.get(id)
        if progress is not None:
            # As the original: an empty description or a false extra changes nothing.
            target.set_progress(progress["percent"], progress.get("description") or None, progress.get("extra") or None)

    @pass_app
    async def job_delete(self, app: ISession | None, id: int) -> None:
        """
        Delete the job C{id} from the history: its record (in memory and in
        the database) and its log file.  Subscribers of C{core.get_jobs} get
        a C{removed} event for it.  Only a job that has ended can be deleted:
        a waiting or running one is refused with C{EBUSY}.  For full
        administrators.
        """
        _check_job_id(id)
        await self._deletion.delete(id, app)

    @pass_app
    async def jobs_prune(self, app: ISession | None, filters: list[Any] | None = None) -> dict[str, Any]:
        """
        Delete from the history every job that has ended and matches
        C{filters} (the query language of C{core.get_jobs}; none or C{[]}
        for every job that has ended), with their log files, as
        L{job_delete} does for one.  Waiting and running jobs that match are
        skipped.  Returns C{{"deleted": N, "skipped": M}}.  For full
        administrators.
        """
        compile_filters(filters)
        return await self._deletion.prune(list(filters or []), app)

    @no_authz_required
    @job()
    @pass_app
    async def job_wait(self, app: ISession | None, job: Job, id: int) -> Any:
        """
        Wait for the job C{id}, mirroring its progress; end as it ends.
        """
        if id == job.id:
            raise CallError("A job cannot wait for itself", errno.EINVAL)
        target = self._job_here(id)
        if target is None:
            record = await self._record_elsewhere(id)
            self.middleware.check_job_access(app, record)
            # The waiting job shows the waited one's progress, as it does for a job here.
            return _outcome(await self.middleware.cluster.wait(id, progress=job.copy_progress))
        self.middleware.check_job_access(app, target)
        # Its record shows the result as the waited job's record does.
        job.redact_result = target.redact_result
        return await job.wrap(target)

    @job(lock=_job_test_lock, abortable=True, pipes=["input"], check_pipes=False)
    async def job_test(self, job: Job, data: dict[str, Any] | None = None) -> bool:
        """
        A job for trying things out.  C{data} may hold C{sleep} (seconds to
        run, reporting progress each second), C{lock} (a lock name to take),
        C{description} (to set) and C{error} (a message to fail with at the end).
        When an input pipe is given, the job reads it to the end first.
        Returns C{True}.
        """
        data = data or {}
        sleep = data.get("sleep", 0)
        _check_job_test_data(data, sleep)
        if data.get("description"):
            job.set_description(str(data["description"]))
        if job.pipes.input is not None:
            while await job.pipes.input.read(1024 * 1024):
                pass
        reactor = self.middleware.reactor
        elapsed = 0.0
        while elapsed < sleep:
            step = min(1.0, sleep - elapsed)
            await deferLater(reactor, step, lambda: None)
            elapsed += step
            job.set_progress(100 * elapsed / sleep)
        if data.get("error"):
            raise CallError(str(data["error"]))
        return True

    @no_authz_required
    @forwards("method", "params.*", results="*.result")
    @job(lock=_bulk_lock, lock_queue_size=None)
    @pass_app
    async def bulk(self, app: ISession | None, job: Job, method: str, params: list[Any], description: str | None = None) -> list[Any]:
        """
        Call C{method} once for each argument list in C{params}, one after
        another, and return a status for each: C{{"job_id", "result",
        "error"}}, C{job_id} being the id of the job the call started (null
        for a method that is not a job, or a call that started none).  The
        bulk job itself succeeds; check each status.

        Bulks of one method run one at a time, in the order they were called
        (the lock C{bulk:<method>}, as in the original daemon); each waits
        its turn, however many there are.

        C{description}, if given, describes each step in the progress: its
        C{{0}}, C{{1}}, ... (and C{{}}) are replaced by that call's arguments
        as its record would show them, secrets hidden.  Only such plain
        positional fields are: anything else in braces (format specs,
        conversions, attributes, indexes) stays as it is written.  A step's
        description is cut at L{MAX_DESCRIPTION} characters.
        """
        statuses: list[dict[str, Any]] = []
        target = self.middleware.methods.get(method) if isinstance(method, str) else None
        for i, call_params in enumerate(params):
            step = f"{i} / {len(params)}"
            if description is not None:
                step += ": " + describe(description, self._shown(target, call_params))
            job.set_progress(100 * i / len(params), step)
            status: dict[str, Any] = {"job_id": None, "result": None, "error": None}
            try:
                if not isinstance(call_params, list):
                    raise CallError("Each item of params must be an argument list", errno.EINVAL)
                if app is not None:
                    outcome = await self.middleware.call_from(app, method, call_params)
                else:
                    outcome = await self.middleware.call(method, *call_params)
                if isinstance(outcome, Job):
                    status["job_id"] = outcome.id
                    outcome = await outcome.wait(raise_error=True, by=job)
                status["result"] = outcome
            except Exception as e:
                status["error"] = e.errmsg if isinstance(e, CallError) else str(e)
            statuses.append(status)
        job.set_progress(100, f"{len(params)} / {len(params)}")
        return statuses

    def _shown(self, target: Any, call_params: Any) -> list[Any]:
        """
        The arguments of one call of L{bulk} as a record of that call shows
        them: C{target}'s secrets redacted; all of them when C{target} is
        not a known method (nothing tells its secrets apart).
        """
        if not isinstance(call_params, list):
            return []
        if target is None:
            return [REDACTED] * len(call_params)
        return self.middleware.redact(target, call_params)

    @no_authz_required
    @forwards("method", "args")
    @secret_result("1")  # the URL carries the token
    @pass_app
    async def download(
        self, app: ISession | None, method: str, args: list[Any], filename: str, buffered: bool = False
    ) -> list[Any]:
        """
        Start the job C{method(*args)} with an output pipe and return
        C{[job_id, "/_download/<job_id>?auth_token=<token>"]}.

        The token is single-use, bound to that job, and lives 300 s.  The
        download must begin within 60 s (C{buffered} false: the job writes
        only as fast as the client reads) or 3600 s (C{buffered} true: the
        job writes to a spool at its own pace; wait for it to end, then
        download); after that the job's output is dropped and the URL
        answers 410.  C{filename} is the name the browser is told to save as.
        """
        target = self.middleware.method(method, app)
        if target.spec.job is None or "output" not in target.spec.job.pipes:
            raise CallError(f"{method} does not write an output pipe: it cannot be downloaded", errno.EINVAL)

        def start(pipes: Pipes) -> Any:
            assert app is not None
            return self.middleware.call_from(app, method, args, pipes=pipes)

        return await self._start_download(app, start, filename, buffered)

    @no_authz_required
    @secret_result()  # the URL carries the token
    @pass_app
    async def job_download_logs(
        self, app: ISession | None, id: int, filename: str, buffered: bool = False
    ) -> str:
        """
        A download URL (as L{download} makes) for the log file of job C{id}.
        """
        await self._logs_path(id, app)

        def start(pipes: Pipes) -> Any:
            return self.middleware.call("core.read_job_logs", id, app=app, pipes=pipes)

        _, url = await self._start_download(app, start, filename, buffered)
        return str(url)

    async def _logs_path(self, id: int, app: ISession | None = None) -> str | None:
        """
        The log file of job C{id}, if C{app} may read it: always the one its
        id gives in the logs directory (L{log_file}), never a path read from
        a record, which a restored backup could have crafted.  C{None} for
        the log of a job of another node, read from the cluster's database
        (L{midjobs.cluster.logs}).

        @raise CallError: C{ENOENT}, no such job, or it has no log file;
            C{EPERM}, C{app} may not read the job.
        """
        record = await self.get_jobs(
            None, [["id", "=", id]], {"get": True, "select": ["logs_path", "credentials", "method", "node"]}
        )
        self.middleware.check_job_access(app, record)
        if record.get("logs_path") and elsewhere(self.middleware.cluster, record) is not None:
            return None
        path = log_file(self.middleware.logs_dir, id) if record.get("logs_path") else None
        if path is None or not os.path.exists(path):
            raise CallError(f"Job {id} has no logs", errno.ENOENT)
        return str(path)

    @private
    @job(pipes=["output"])
    def read_job_logs(self, job: Job, id: int) -> int:
        """
        Write the log of job C{id} to this job's output pipe (its file, or
        its chunks in the cluster's database); return its size.
        """
        def logs_path() -> Deferred[str | None]:
            return Deferred.fromCoroutine(self._logs_path(id))

        reactor = self.middleware.reactor
        # Typed as the union Twisted's stub asks for.
        waited: Callable[[], Deferred[str | None]] | Callable[[], str | None] = logs_path
        path: str | None = blockingCallFromThread(reactor, waited)
        output = job.pipes.output
        assert output is not None  # the job declares its output pipe: the call checked it
        size = 0
        if path is None:
            cluster = IJobLogChunks(self.middleware.cluster)
            seq = 0
            while chunks := blockingCallFromThread(reactor, cluster.log_chunks, id, seq):
                seq = chunks[-1][0]
                for _, chunk in chunks:
                    output.w.write(chunk)
                    size += len(chunk)
        else:
            with open(path, "rb") as logs:
                while block := logs.read(_LOG_BLOCK):
                    output.w.write(block)
                    size += len(block)
        output.w.close()
        return size

    async def _start_download(self, app: ISession | None, start: Any, filename: str, buffered: bool) -> list[Any]:
        if app is None or app.user is None:
            raise CallError("A download needs a logged-in caller", errno.EPERM)
        # Started from here, its job is no client's call: the drain is checked here.
        self.middleware.drain.check_accepting()
        pipe = self.middleware.pipe(buffered)
        try:
            started = await start(Pipes(output=pipe))
            if not isinstance(started, Job) or started.pipes.output is not pipe:
                raise CallError(
                    "The job's output goes to another download (it was already queued)", errno.EBUSY
                )
        except BaseException as e:
            pipe.abort(e)
            raise
        try:
            token = await self.middleware.tokens.create(
                app.user, DOWNLOAD_TOKEN_TTL, attrs={"filename": filename}, single_use=True, job_id=started.id
            )
        except TooManyTokens as e:
            log.warn(
                "Refused a download token to {user} from {address}: {reason}",
                user=app.user.username,
                address=str(app.peer),
                reason=e.errmsg,
            )
            # Nobody could read its output: the job does not go on.
            started.abort(e.errmsg)
            pipe.abort(e)
            raise
        self.middleware.downloads.add(started.id, pipe, filename, buffered)
        return [started.id, f"/_download/{started.id}?auth_token={token}"]

    async def setup(self) -> None:
        self._log_events = JobLogEvents(self.middleware)
        self._log_events.register()
        self._query_threads = ThreadPool(minthreads=0, maxthreads=QUERY_THREADS, name="midjobs.queries")
        self._query_threads.start()

    async def stop(self) -> None:
        self._log_events.stop()
        self.middleware.downloads.stop()
        if self._query_threads is not None:
            threads, self._query_threads = self._query_threads, None
            threads.stop()

    @no_authz_required
    @pass_app
    async def get_methods(self, app: ISession | None) -> dict[str, Any]:
        """
        The methods this connection may see, by name: their description,
        arguments, job options and decorations.
        """
        methods = {}
        for name, method in sorted(self.middleware.methods.items()):
            spec = method.spec
            if spec.private and (app is None or not app.private_methods):
                continue
            methods[name] = {
                "description": method.doc,
                "accepts": method.signature.to_wire(),
                "variadic": method.signature.variadic,
                "job": spec.job is not None,
                "job_options": spec.job.to_wire(self._default_timeout) if spec.job else None,
                "uploadable": spec.job is not None and "input" in spec.job.pipes,
                "downloadable": spec.job is not None and "output" in spec.job.pipes,
                "private": spec.private,
                "pass_app": spec.pass_app,
                "no_auth_required": spec.no_auth_required,
                "no_authz_required": spec.no_authz_required,
                "read_only": spec.read_only,
                "roles": list(spec.roles),
            }
        return methods
