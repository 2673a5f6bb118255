"""
The middleware: the registry of services and methods, and the one way to call them.

Everything that calls a method goes through L{Middleware}: the WebSocket
sessions and the HTTP routes with L{Middleware.call_from} (which checks the
caller may), and services calling each other with L{Middleware.call} or, from
a thread, L{Middleware.call_sync}.
"""

from __future__ import annotations

import errno
import inspect
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Iterator, Mapping, Protocol, Sequence

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.threads import blockingCallFromThread, deferToThreadPool
from .logs import logger
from twisted.python.threadable import isInIOThread

from .access import AccessDenied, check_job_access, may_call, may_see_job, owns_or_administers, visible_jobs_filter
from .arguments import REDACTED, Signature, at_path, signature_of
from .auth.gate import LoginGate
from .auth.api_keys import api_key_store_of
from .auth.endings import EndedLogins
from .auth.realm import ended_logins_of
from .auth.throttle import LoginThrottle
from .auth.tokens import ITokenStore, TokenStore, token_store_of
from .auth.web_sessions import WebSessionKeepAlive, WebSessionStore
from .config import Settings
from .drain import Drain
from .errors import ENOMETHOD, ENOTAUTHENTICATED, CallError
from .events import EventHub
from .health import Health, StoreCheck, state_dir_writable
from .job import Job, JobsQueue, ProgressCallback
from .job_events import JOBS_EVENT, JobEvents
from .local_cluster import LocalCluster
from .store.ids import CountedJobIds, StoredJobIds
from .metrics import Metrics
from .pipe import Pipe, Pipes
from .read_order import NewestReads
from .decorators import MethodSpec, method_spec
from .transfers import DownloadRelay, Downloads

if TYPE_CHECKING:
    from twisted.cred.portal import Portal

    from .auth.users import UserStore
    from .interfaces import ICluster, ISession
    from .locks import ILockManager
    from .store import IJobStore
    from .store._interfaces import IJobIds

__all__ = ["API_KEY", "USER", "WEB_SESSION", "Method", "Middleware", "MethodNotFound", "NotAuthenticated", "WATCHING_JOBS"]

#: What L{Middleware.catalogue_changed_elsewhere} is told changed: a user, an API key, a web session (ended).
USER = "user"
API_KEY = "api_key"
WEB_SESSION = "web_session"

#: For the catalogue entries whose end ends the logins through them: the
#: L{IUser} attribute that holds their id, and why those logins end.
_ENDINGS: dict[str, tuple[str, str]] = {
    API_KEY: ("api_key_id", "API key {} was deleted"),
    WEB_SESSION: ("web_session_id", "web session {} ended"),
}

log = logger(__name__)

#: Job methods that only wait for other jobs: clients may still call them
#: while the daemon drains, to follow the jobs they started.
WATCHING_JOBS = frozenset({"core.job_wait"})


class Service(Protocol):
    """
    What the middleware needs of a service (L{midjobs.service.Service}, which
    sits above it: it is handed the middleware).
    """

    namespace: ClassVar[str]

    def __init__(self, middleware: Middleware) -> None: ...

    async def setup(self) -> None: ...

    async def stop(self) -> None: ...

    @classmethod
    def exposed_methods(cls) -> Iterator[tuple[str, Callable[..., Any]]]: ...


class MethodNotFound(CallError):
    """
    No such method, or a private one the caller may not see.
    """

    def __init__(self, name: str) -> None:
        super().__init__(f"Method {name!r} does not exist", ENOMETHOD)


class NotAuthenticated(CallError):
    def __init__(self) -> None:
        super().__init__("Not authenticated", ENOTAUTHENTICATED)


@attrs.frozen
class Method:
    """
    One exposed method: C{namespace.name} and how to run it.
    """

    name: str
    run: Callable[..., Any]
    spec: MethodSpec
    signature: Signature
    is_async: bool

    @property
    def doc(self) -> str | None:
        return inspect.getdoc(self.run)

    def leading(self, app: ISession | None, message_id: Any = None) -> list[Any]:
        """
        What the daemon passes before the caller's arguments (not the job).

        @raise CallError: the method requires a session, and there is none.
        """
        spec = self.spec
        if not spec.pass_app:
            return []
        if spec.app_required and app is None:
            raise CallError("`app` is required")
        return [app, message_id] if spec.passes_message_id else [app]

    def prepare(self, params: Sequence[Any], app: ISession | None, message_id: Any = None) -> tuple[list[Any], list[Any]]:
        """
        What the daemon passes before the caller's arguments (L{leading}),
        and those arguments, checked against the method's signature.

        @raise ValidationErrors: they do not match it.
        """
        arguments = list(params)
        self.signature.check(arguments)
        return self.leading(app, message_id), arguments


class Middleware:
    """
    The services, their methods, the jobs queue and the event hub of one daemon.

    @ivar state_dir: where the daemon keeps its files.
    @ivar portal: the C{twisted.cred} portal every login goes through.
    @ivar users: the user accounts.
    """

    def __init__(
        self,
        reactor: Any,
        state_dir: Path,
        *,
        portal: Portal | None = None,
        users: UserStore | None = None,
        keep_finished_jobs: int = 1000,
        settings: Any = None,
        job_store: IJobStore | None = None,
        job_ids: IJobIds | None = None,
        locks: ILockManager | None = None,
        node: str | None = None,
        cluster: ICluster | None = None,
        store_check: Callable[[], Deferred[Any]] | None = None,
    ) -> None:
        """
        @param job_ids: where new jobs get their ids; by default from above
            the highest C{job_store} holds (L{StoredJobIds}), or counted from 1
            without one.
        @param locks: who holds the job locks (by default in memory).
        @param node: the daemon's node name, the C{node} of its jobs'
            records; by default the settings' C{node} (the host name).
        @param cluster: the nodes that share the job store; by default this
            one alone (L{LocalCluster}).
        @param store_check: starts a check that the job store takes writes
            (L{midjobs.health.StoreCheck}); by default, that a file can be
            made in C{state_dir}.
        """
        self.reactor = reactor
        self.state_dir = state_dir
        self.logs_dir = state_dir / "jobs"
        self.portal = portal
        self.users = users
        self.settings = settings
        self.events = EventHub()
        self.events.register(
            JOBS_EVENT,
            "Jobs as they are added, change and end.",
            may_see=lambda user, name, fields: fields is None or self.may_see_job(user, fields),
        )
        #: Where jobs are recorded (C{None}: the newest are kept in memory only).
        self.job_store = job_store
        if job_ids is None:
            job_ids = StoredJobIds(job_store) if job_store is not None else CountedJobIds()
        self.jobs = JobsQueue(
            keep_finished=keep_finished_jobs,
            store=job_store,
            may_share=lambda new, credentials: owns_or_administers(new.owner, credentials),
            default_timeout=_settings(settings).default_timeout,
            ids=job_ids,
            locks=locks,
            node=node if node is not None else _settings(settings).node,
        )
        #: The nodes that share the job store, for the jobs not in C{jobs}.
        self.cluster: ICluster = (
            cluster
            if cluster is not None
            else LocalCluster(self.jobs.node, job_store, self.jobs, _settings(settings).advertise_url())
        )
        #: The daemon's way out: once it drains, clients start no more jobs.
        self.drain = Drain(reactor, self.jobs)
        if store_check is None:
            store_check = lambda: state_dir_writable(reactor, state_dir)  # noqa: E731
        #: Whether the daemon serves and its store takes writes (C{/_health}).
        self.health = Health(StoreCheck(reactor, store_check), self.drain)
        #: The short-lived tokens; the portal's token checker uses the same store.
        tokens = token_store_of(portal)
        self.tokens: ITokenStore = tokens if tokens is not None else TokenStore(reactor)
        self.tokens.max_per_user = _settings(settings).max_tokens_per_user
        self.services: dict[str, Service] = {}
        self.methods: dict[str, Method] = {}
        #: What the daemon measures (C{/metrics}); its lower layers count through it (L{midjobs.metrics.ICounts}).
        self.metrics = Metrics(reactor, jobs=lambda: self.jobs, methods=self.methods)
        # The token store counts its refusals (tokens_per_user) here, the queue its own (jobs_per_user).
        self.tokens.counts = self.metrics
        self.jobs.counts = self.metrics
        self.jobs.max_per_user = _settings(settings).max_jobs_per_user
        # The job lifecycle's observers, in this order: the metrics count a job's
        # end before its subscribers hear of it.  The webhooks (midjobs.notify)
        # and the log followers (midjobs.log_events) register themselves.
        self.jobs.observe(self.metrics)
        self.jobs.observe(JobEvents(self.events))
        #: The logins that end, which the portal's realm refuses to complete if it is checking them.
        ended_logins = ended_logins_of(portal)
        self._ended_logins = ended_logins if ended_logins is not None else EndedLogins()
        #: The reads of users told changed elsewhere: a stale one must not undo a lock.
        self._user_reads = NewestReads()
        #: Every login goes through it, throttled (C{None} without a portal).
        self.logins = (
            LoginGate(portal, _throttle(reactor, settings), counts=self.metrics) if portal is not None else None
        )
        #: The web page's logins, kept in the users' database (C{None} without a user store).
        self.web_sessions = (
            WebSessionStore(
                users.pool,
                reactor,
                lifetime=_settings(settings).session_lifetime,
                idle_timeout=_settings(settings).session_idle_timeout,
                ended=self.web_sessions_ended,
            )
            if users is not None
            else None
        )
        #: The logged-in WebSocket sessions, so a change to a user reaches them at once.
        self.sessions: weakref.WeakSet[ISession] = weakref.WeakSet()
        #: Keeps the web sessions these sessions logged in through from going idle.
        self.web_session_keep_alive = (
            WebSessionKeepAlive(self.web_sessions, self._web_session_ids, reactor)
            if self.web_sessions is not None
            else None
        )
        #: The downloads that core.download prepared and /_download serves.
        self.downloads = Downloads(reactor)
        #: How downloads cross between the nodes of a cluster (L{None}: one daemon, and
        #: C{/_internal/download} answers 404).
        self.download_relay: DownloadRelay | None = None

    # The registry.

    def add_service(self, service_class: type[Service]) -> Service:
        """
        Instantiate C{service_class} and expose its methods.

        @raise ValueError: its namespace is taken.
        """
        namespace = service_class.namespace
        if namespace in self.services:
            raise ValueError(f"Service namespace {namespace!r} is already registered")
        service = service_class(self)
        self.services[namespace] = service
        for name, func in service_class.exposed_methods():
            spec = method_spec(func)
            skip = 1 + spec.filled_parameters
            self.methods[f"{namespace}.{name}"] = Method(
                name=f"{namespace}.{name}",
                run=getattr(service, name),
                spec=spec,
                signature=signature_of(func, skip),
                is_async=inspect.iscoroutinefunction(func),
            )
        return service

    def add_services(self, service_classes: Iterable[type[Service]]) -> None:
        for service_class in service_classes:
            self.add_service(service_class)

    def method(self, name: str, app: ISession | None = None) -> Method:
        """
        The method C{name} as C{app} may see it.

        @raise MethodNotFound: there is none, or it is private and C{app} did
            not ask for private methods.
        """
        method = self.methods.get(name)
        if method is None or (method.spec.private and app is not None and not app.private_methods):
            raise MethodNotFound(name)
        return method

    async def start(self) -> None:
        """
        Have job ids at hand (L{midjobs.store.IJobIds.start}); run each
        service's C{setup}, in the order they were added; start measuring
        the reactor's lag and the job history's commits.
        """
        await self.jobs.ids.start()
        self.metrics.start()
        if self.web_session_keep_alive is not None:
            self.web_session_keep_alive.start()
        # A store that writes in batches (midjobs.store.WriteBatch) times its commits.
        batch = getattr(self.job_store, "batch", None)
        if batch is not None and hasattr(batch, "on_commit"):
            batch.on_commit = self.metrics.observe_commit
        for service in self.services.values():
            await service.setup()

    async def stop(self, reason: str = "The daemon stopped while this job was running") -> None:
        """
        Abort the jobs that have not ended and stop the services.
        """
        self.jobs.abort_all(reason)
        self.metrics.stop()
        if self.web_session_keep_alive is not None:
            self.web_session_keep_alive.stop()
        for service in reversed(list(self.services.values())):
            await service.stop()

    # Calling.

    def call_from(
        self,
        app: ISession,
        name: str,
        params: Sequence[Any],
        *,
        pipes: Pipes | None = None,
        message_id: Any = None,
    ) -> Deferred[Any]:
        """
        Call C{name} for a client session, checking that it may.

        @return: a Deferred firing with the result, or the L{Job} for a job method.
        @raise MethodNotFound: see L{method}.
        @raise NotAuthenticated: the session must log in first.
        @raise midjobs.drain.DaemonStopping: a job method (but those of
            L{WATCHING_JOBS}) while the daemon drains.
        @raise CallError: C{ENOTCONN}, a job method (but those of
            L{WATCHING_JOBS}) while this node is cut from its cluster's
            job store (L{ICluster.check_accepting}).
        """
        method = self.method(name, app)
        self.check_call(app, method)
        if method.spec.job is not None and name not in WATCHING_JOBS:
            # Jobs already running may still start theirs (they are let finish).
            self.drain.check_accepting()
            self.cluster.check_accepting()
        return self._call(method, params, app, pipes, message_id)

    def check_call(self, app: ISession, method: Method) -> None:
        """
        Check that C{app} may call C{method} (L{midjobs.access}); log a refusal.

        @raise NotAuthenticated: the session must log in first.
        @raise AccessDenied: its user's roles do not allow the call.
        """
        if may_call(app.user, method.spec):
            return
        if app.user is None:
            raise NotAuthenticated()
        log.warn(
            "{username} from {peer} may not call {method}",
            username=app.user.username,
            peer=app.peer,
            method=method.name,
        )
        raise AccessDenied()

    def call(
        self,
        name: str,
        *params: Any,
        app: ISession | None = None,
        pipes: Pipes | None = None,
        job_on_progress_cb: ProgressCallback | None = None,
    ) -> Deferred[Any]:
        """
        Call C{name} from within the daemon (no access checks).

        A job method's Deferred fires with its L{Job} once it is queued::

            job = await self.middleware.call("core.job_test", {"sleep": 1})
            result = await job.wait(raise_error=True)

        @param job_on_progress_cb: for a job method, called with the job's
            record each time it reports progress (L{Job.on_progress_cb}).
        """
        try:
            return self._call(self.method(name), params, app, pipes, None, job_on_progress_cb)
        except Exception as e:
            return fail(e)

    def run_in_thread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        """
        Call C{f(*args, **kwargs)} in the reactor's thread pool (where thread
        jobs run), as the original's C{middleware.run_in_thread}: a
        Deferred of its result for a coroutine to await.
        """
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f, *args, **kwargs)

    def call_sync(
        self,
        name: str,
        *params: Any,
        app: ISession | None = None,
        pipes: Pipes | None = None,
        job_on_progress_cb: ProgressCallback | None = None,
        background: bool = False,
    ) -> Any:
        """
        L{call} from a thread job: block that thread until the result (or the
        L{Job}) is there.  A plain method (neither a job nor a coroutine) runs
        in the calling thread.

        @param background: do not wait: start the call in the reactor and
            return C{None} at once; its failure is logged.
        @raise RuntimeError: called on the reactor thread, which must never block.
        """
        if isInIOThread():  # type: ignore[no-untyped-call]  # not annotated in Twisted
            raise RuntimeError("call_sync would block the reactor: use call()")
        if background:
            self.reactor.callFromThread(self._call_in_background, name, params, app)
            return None
        method = self.method(name)
        if method.spec.job is None and not method.is_async:
            # In this thread, as the original does: a thread job calling it
            # needs no other thread of the pool, which may have none free.
            leading, arguments = method.prepare(params, app)
            return method.run(*leading, *arguments)
        return blockingCallFromThread(
            self.reactor, self.call, name, *params, app=app, pipes=pipes, job_on_progress_cb=job_on_progress_cb
        )

    def _call_in_background(self, name: str, params: Sequence[Any], app: ISession | None) -> None:
        """
        L{call} whose caller does not wait (C{call_sync(..., background=True)}).
        """
        self.call(name, *params, app=app).addErrback(
            lambda failure: log.failure("Background call of {method} failed", failure, method=name)
        )

    def _call(
        self,
        method: Method,
        params: Sequence[Any],
        app: ISession | None,
        pipes: Pipes | None,
        message_id: Any,
        on_progress_cb: ProgressCallback | None = None,
    ) -> Deferred[Any]:
        leading, arguments = method.prepare(params, app, message_id)
        if method.spec.job is not None:
            return self._queue_job(method, arguments, leading, app, pipes, message_id, on_progress_cb)
        if method.is_async:
            return Deferred.fromCoroutine(method.run(*leading, *arguments))
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), method.run, *leading, *arguments)

    def _queue_job(
        self,
        method: Method,
        params: list[Any],
        leading: list[Any],
        app: ISession | None,
        pipes: Pipes | None,
        message_id: Any,
        on_progress_cb: ProgressCallback | None = None,
    ) -> Deferred[Job]:
        options = method.spec.job
        assert options is not None
        user = app.user if app is not None else None
        job = Job(
            self.reactor,
            method.name,
            options,
            method.run,
            params,
            is_async=method.is_async,
            leading=leading,
            pipes=pipes,
            credentials=user.to_credentials() if user is not None else None,
            owner=user,
            logs_dir=self.logs_dir,
            recorded_arguments=self.redact(method, params) if method.spec.secrets or method.spec.forwards else None,
            redact_result=self.result_redactor(method, params),
            middleware=self,
            on_progress_cb=on_progress_cb,
        )
        if options.check_pipes:
            for pipe in options.pipes:
                job.check_pipe(pipe)
        if message_id is not None:
            job.message_ids.append(message_id)
        queued = self.jobs.add(job)
        if job.id:
            # Queued at once (not shared with a waiting job, an id at hand).
            # One a running job started while draining: the drain waits for it too.
            self.drain.track(job)
            queued.addErrback(self._job_refused, job)
        else:
            # Shared with a waiting job (lock_queue_size), or queued later (a
            # lock manager or the ids answering later).
            queued.addCallbacks(self._queued_later, self._job_refused, callbackArgs=(job, message_id), errbackArgs=(job,))
        return queued

    def _queued_later(self, queued: Any, job: Job, message_id: Any) -> Any:
        """
        C{job} was queued (C{queued} is C{job}: the drain waits for it), or
        its caller got the waiting job C{queued} instead, which gains the
        request's id.
        """
        if queued is job:
            self.drain.track(job)
        elif message_id is not None and isinstance(queued, Job):
            queued.add_message_id(message_id)
        return queued

    def redact(self, method: Method, params: Sequence[Any]) -> list[Any]:
        """
        C{params} as a record of the call shows them: the method's secret
        arguments (L{midjobs.service.secret}), and those of the calls it
        forwards (L{midjobs.service.forwards}), replaced by C{REDACTED}.
        """
        spec = method.spec
        redacted = list(params)
        for path in spec.secrets:
            redacted = method.signature.at_path(redacted, path, _redacted)
        if spec.forwards is not None:
            target = self._forwarded_to(method, params)
            if target is None:
                # Forwarded to no known method: nothing tells its secrets apart.
                return method.signature.at_path(redacted, spec.forwards.arguments, _redacted)

            def forwarded(args: Any) -> Any:
                return self.redact(target, args) if isinstance(args, list) else _redacted(args)

            redacted = method.signature.at_path(redacted, spec.forwards.arguments, forwarded)
        return redacted

    def result_redactor(self, method: Method, params: Sequence[Any]) -> Callable[[Any], Any] | None:
        """
        What makes a result of C{method} called with C{params} as its record
        shows it: the secret parts of the result (L{midjobs.service.secret_result}),
        and those of the results of the calls it forwards, replaced by
        C{REDACTED}; C{None} if no result of it holds a secret.
        """
        spec = method.spec
        forwarded: tuple[tuple[str, ...], Callable[[Any], Any]] | None = None
        if spec.forwards is not None and spec.forwards.results is not None:
            target = self._forwarded_to(method, params)
            # Forwarded to no known method: nothing tells its secrets apart.
            nested = _redacted if target is None else self.result_redactor(target, ())
            if nested is not None:
                forwarded = (spec.forwards.results, nested)
        if not spec.result_secrets and forwarded is None:
            return None

        def redact(result: Any) -> Any:
            for keys in spec.result_secrets:
                result = at_path(result, keys, _redacted)
            if forwarded is not None:
                result = at_path(result, *forwarded)
            return result

        return redact

    def _forwarded_to(self, method: Method, params: Sequence[Any]) -> Method | None:
        """
        The method a call of C{method} forwards to (L{midjobs.service.forwards}),
        if it names a known one.
        """
        assert method.spec.forwards is not None
        names = [p.name for p in method.signature.parameters]
        parameter = method.spec.forwards.method
        index = names.index(parameter) if parameter in names else len(params)
        name = params[index] if index < len(params) else None
        return self.methods.get(name) if isinstance(name, str) else None

    def user_changed(self, user_id: int, user: Mapping[str, Any] | None) -> Deferred[None]:
        """
        The stored user C{user_id} is now C{user} (a record of the user
        store), or is gone (L{None}): its logged-in sessions get its new name
        and roles, or lose their login if it is gone or locked, at once, on
        every node of the cluster.  A gone or locked user's tokens are
        revoked and its web sessions end.  A UNIX-socket peer's rights
        do not come from the store and stay.

        @return: fires once the tokens are revoked (a failure is logged, never passed on).
        """
        self.cluster.catalogue_changed(USER, user_id)
        self._user_reads.learnt(user_id)
        changed = self._user_changed_here(user_id, user)
        if self.web_sessions is None or user is None or not user["locked"]:
            # A deleted user's web sessions went with its row.
            return changed
        # Shared by every node: ended here, once (a failure is logged; each use checks the user anyway).
        ended = Deferred.fromCoroutine(self.web_sessions.end_of_user(user_id)).addErrback(
            lambda failure: log.failure("User {user_id}: its web sessions", failure, user_id=user_id)
        )
        return changed.addCallback(lambda _: ended)

    def api_key_deleted(self, api_key_id: int) -> Deferred[None]:
        """
        The API key C{api_key_id} is gone: revoke every token derived from it,
        and log out the sessions that logged in with it or with those tokens,
        on every node of the cluster.

        @return: fires once the tokens are revoked (a failure is logged, never passed on).
        """
        self.cluster.catalogue_changed(API_KEY, api_key_id)
        return self._ended_here(API_KEY, api_key_id)

    def web_sessions_ended(self, web_session_ids: Iterable[int]) -> None:
        """
        The web sessions C{web_session_ids} ended (L{WebSessionStore} tells):
        revoke the tokens derived from them, and log out the sessions that
        logged in through them, on every node of the cluster.
        """
        for web_session_id in web_session_ids:
            self.cluster.catalogue_changed(WEB_SESSION, web_session_id)
            self._ended_here(WEB_SESSION, web_session_id)

    def catalogue_changed_elsewhere(self, kind: str, identity: int) -> Deferred[None]:
        """
        Another node changed or deleted the user or API key C{identity}, or
        ended the web session C{identity} (L{ICluster.catalogue_changed}):
        update or log out this node's sessions of it, from what the store
        now holds.
        """
        if kind in _ENDINGS:
            return self._ended_here(kind, identity)
        if kind != USER or self.users is None:
            return succeed(None)
        users = self.users
        d = self._user_reads.read(
            identity, lambda: users.find(identity), lambda user: self._user_changed_here(identity, user)
        )
        return d.addErrback(lambda failure: log.failure("User {user_id} changed elsewhere", failure, user_id=identity))

    def catalogue_missed(self) -> Deferred[None]:
        """
        What other nodes told of their users, API keys and web sessions may
        have gone unheard (this node's listener was away,
        L{ICluster.catalogue_changed}): check each login held here against
        the store, as if each had been told.  A failure is logged.
        """
        checked = Deferred.fromCoroutine(self._check_logins())
        return checked.addErrback(lambda failure: log.failure("Checking the logins held here", failure))

    async def _check_logins(self) -> None:
        users = [session.user for session in list(self.sessions) if session.user is not None]
        # And the users remembered as locked, which may have been unlocked meanwhile.
        user_ids = {user.user_id for user in users if user.user_id is not None}
        for user_id in sorted(user_ids.union(self._ended_logins.remembered("user_id"))):
            await self.catalogue_changed_elsewhere(USER, user_id)
        keys = api_key_store_of(self.portal)
        if keys is not None:
            for api_key_id in sorted({user.api_key_id for user in users if user.api_key_id is not None}):
                try:
                    await keys.get(api_key_id)
                except CallError as e:
                    if e.errno == errno.ENOENT:
                        await self._ended_here(API_KEY, api_key_id)
                    else:
                        log.warn("API key {api_key_id}: {error}", api_key_id=api_key_id, error=e.errmsg)
        if self.web_sessions is not None:
            in_use = self._web_session_ids()
            for web_session_id in sorted(in_use - await self.web_sessions.live(in_use)):
                await self._ended_here(WEB_SESSION, web_session_id)

    def _user_changed_here(self, user_id: int, user: Mapping[str, Any] | None) -> Deferred[None]:
        if user is None:
            return self._logins_end("user_id", user_id, f"user {user_id} is gone")
        if user["locked"]:
            return self._logins_end("user_id", user_id, f"user {user_id} is locked")
        self._ended_logins.forget("user_id", user_id)  # unlocked, if it was locked
        for session in list(self.sessions):
            if session.user is not None and session.user.user_id == user_id:
                session.user = attrs.evolve(session.user, username=user["username"], roles=frozenset(user["roles"]))
        return succeed(None)

    def _ended_here(self, kind: str, identity: int) -> Deferred[None]:
        """
        The API key or web session (C{kind}, one of L{_ENDINGS}) C{identity}
        is gone: so are the logins through it, here.
        """
        source, why = _ENDINGS[kind]
        return self._logins_end(source, identity, why.format(identity))

    def _logins_end(self, source: str, identity: int, why: str) -> Deferred[None]:
        """
        Revoke every token derived from the user, API key or web session
        C{identity} (C{source} is the L{IUser} attribute that holds it:
        C{"user_id"}, C{"api_key_id"} or C{"web_session_id"}), and log out
        this daemon's sessions that logged in through it, saying C{why}.

        @return: fires once the tokens are revoked (a failure is logged, never passed on).
        """
        self._ended_logins.end(source, identity)
        revoked = self.tokens.revoke_derived(**{source: identity}).addCallbacks(
            lambda count: log.info("{why}: {count} tokens revoked", why=why, count=count),
            lambda failure: log.failure("{why}: its tokens", failure, why=why),
        )
        self.log_out(lambda avatar: bool(getattr(avatar, source) == identity), why)
        return revoked

    def _web_session_ids(self) -> set[int]:
        """
        The web sessions this daemon's logged-in sessions logged in through.
        """
        users = (session.user for session in list(self.sessions))
        return {user.web_session_id for user in users if user is not None and user.web_session_id is not None}

    def log_out(self, which: Callable[[Any], bool], reason: str) -> None:
        """
        Log out the sessions whose user C{which(user)} picks, at once.
        """
        for session in list(self.sessions):
            if session.user is not None and which(session.user):
                log.info("{session} logged out: {reason}", session=session, reason=reason)
                session.logout()

    # Access to jobs.

    def read_roles_of(self, method_name: str) -> tuple[str, ...]:
        """
        The C{read_roles} of the job method C{method_name} (none if it is gone).
        """
        method = self.methods.get(method_name)
        if method is None or method.spec.job is None:
            return ()
        return method.spec.job.read_roles

    def _owner_and_readers(self, record: Any) -> tuple[Any, tuple[str, ...]]:
        """
        The C{credentials} and C{read_roles} of a job, from its record or its L{Job}.
        """
        if isinstance(record, Job):
            return record.credentials, record.options.read_roles
        return record.get("credentials"), self.read_roles_of(record.get("method", ""))

    def may_see_job(self, user: Any, record: Any) -> bool:
        """
        Whether C{user} may see the job whose record (or L{Job}) is C{record}.
        """
        return may_see_job(user, *self._owner_and_readers(record))

    def check_job_access(self, app: ISession | None, record: Any, *, change: bool = False) -> None:
        """
        Raise L{midjobs.access.JobAccessDenied} unless the caller C{app} may
        read (or, with C{change}, abort) the job of C{record} (a record or a
        L{Job}).  The daemon itself (C{app} C{None}) may do anything.
        """
        if app is None or app.user is None:
            return
        check_job_access(app.user, *self._owner_and_readers(record), change=change)

    def visible_jobs_filter(self, user: Any) -> list[Any]:
        """
        The C{core.get_jobs} filters that keep the jobs C{user} may see.
        """
        readable = (
            name
            for name, method in self.methods.items()
            if method.spec.job is not None and not user.roles.isdisjoint(method.spec.job.read_roles)
        )
        return visible_jobs_filter(user, readable)

    def pipe(self, buffered: bool = False) -> Pipe:
        """
        A new pipe for a job's C{Pipes}.

        @param buffered: spool to a temporary file, so that the writer never
            waits for the reader and the reader may start at any time.
        """
        return Pipe(self.reactor, buffered=buffered)

    # Events.

    def send_event(self, name: str, msg: str, id: Any = None, fields: dict[str, Any] | None = None) -> None:
        """
        Send a C{collection_update} to the subscribers of C{name}.
        """
        self.events.send(name, msg, id, fields)

    def _job_refused(self, failure: Any, job: Job) -> Any:
        """
        C{job} was not queued.  One numbered could not be recorded: it is
        aborted, and never heard of again (its observers are never told: the
        metrics count it here).
        """
        if job.id:
            self.metrics.job_refused(job)
        return failure


def _settings(settings: Any) -> Any:
    """
    The settings, or their defaults when there are none (in-memory tests).
    """
    return settings if settings is not None else Settings()


def _throttle(reactor: Any, settings: Any) -> LoginThrottle:
    """
    The throttle of failed logins, as the settings (if any) say.
    """
    if settings is None:
        return LoginThrottle(reactor)
    return LoginThrottle(
        reactor,
        limit=settings.login_attempts,
        window=settings.login_window,
        cooldown=settings.login_cooldown,
    )


def _redacted(value: Any) -> str:
    return REDACTED
