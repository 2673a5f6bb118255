"""
The decorators that describe a service's methods, and what they record.

A service (L{midjobs.service.Service}) groups methods under a namespace::

    class CoreService(Service):
        namespace = "core"

        @job(lock="rebuild", abortable=True)
        async def rebuild(self, job, data: dict | None = None) -> bool:
            ...

Every public method becomes ``core.<name>``; the decorators below say how it
may be called.  The middleware reads them through :func:`method_spec`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar, overload

import attrs

__all__ = [
    "Forwarding",
    "JobOptions",
    "MethodSpec",
    "forwards",
    "job",
    "method_spec",
    "no_auth_required",
    "no_authz_required",
    "pass_app",
    "private",
    "read_only",
    "roles",
    "secret",
    "secret_result",
]

F = TypeVar("F", bound=Callable[..., Any])

_SPEC_ATTRIBUTE = "__midjobs_method__"


@attrs.frozen
class JobOptions:
    """
    How a method runs as a job: the arguments of :func:`job`.
    """

    lock: str | Callable[[list[Any]], str | None] | None = None
    lock_queue_size: int | None = 5
    logs: bool = False
    pipes: tuple[str, ...] = ()
    check_pipes: bool = True
    transient: bool = False
    description: Callable[..., str | None] | None = None
    abortable: bool = False
    read_roles: tuple[str, ...] = ()
    timeout: float | None = None

    def lock_name(self, args: Sequence[Any]) -> str | None:
        """
        The name of the lock a job with these arguments takes, if any.
        """
        if callable(self.lock):
            return self.lock(list(args))
        return self.lock

    def to_wire(self, default_timeout: float | None = None) -> dict[str, Any]:
        """
        The options as ``core.get_methods`` shows them.

        @param default_timeout: the daemon's C{[jobs] default_timeout}: the
            C{timeout} shown when the method sets none (the limit in force).
        """
        return {
            "lock": self.lock if isinstance(self.lock, str) else None,
            "lock_queue_size": self.lock_queue_size,
            "logs": self.logs,
            "pipes": list(self.pipes),
            "check_pipes": self.check_pipes,
            "transient": self.transient,
            "abortable": self.abortable,
            "read_roles": list(self.read_roles),
            "timeout": self.timeout if self.timeout is not None else default_timeout,
        }


@attrs.frozen
class Forwarding:
    """
    A method that calls another one for its caller (see L{forwards}).

    @ivar method: the parameter that names the method called.
    @ivar arguments: the path of the argument lists passed to it.
    @ivar results: the path, in the result, of what those calls returned.
    """

    method: str
    arguments: str
    results: tuple[str, ...] | None = None


@attrs.frozen
class MethodSpec:
    """
    What the decorators said about one method.
    """

    job: JobOptions | None = None
    private: bool = False
    pass_app: bool = False
    pass_message_id: bool = False
    app_required: bool = False
    no_auth_required: bool = False
    no_authz_required: bool = False
    read_only: bool = False
    roles: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    result_secrets: tuple[tuple[str, ...], ...] = ()
    forwards: Forwarding | None = None

    @property
    def passes_message_id(self) -> bool:
        """
        Whether the method gets its request's id after the session (a job
        never does, as in the original daemon).
        """
        return self.pass_app and self.pass_message_id and self.job is None

    @property
    def filled_parameters(self) -> int:
        """
        How many parameters after C{self} the daemon fills: the session, the
        request's id, the job.
        """
        return self.pass_app + self.passes_message_id + (self.job is not None)


def method_spec(func: Callable[..., Any]) -> MethodSpec:
    """
    The decorators' description of C{func} (defaults when it has none).
    """
    return getattr(func, _SPEC_ATTRIBUTE, None) or MethodSpec()


def _amend(func: F, **changes: Any) -> F:
    target = getattr(func, "__func__", func)
    setattr(target, _SPEC_ATTRIBUTE, attrs.evolve(method_spec(target), **changes))
    return func


def job(
    lock: str | Callable[[list[Any]], str | None] | None = None,
    lock_queue_size: int | None = 5,
    logs: bool = False,
    pipes: Sequence[str] | None = None,
    check_pipes: bool = True,
    transient: bool = False,
    description: Callable[..., str | None] | None = None,
    abortable: bool = False,
    read_roles: Sequence[str] | None = None,
    timeout: float | None = None,
) -> Callable[[F], F]:
    """
    Run the decorated method as a job: a call returns at once with a job id.

    The method receives the :class:`~midjobs.job.Job` as its first argument
    after C{self} (and after the session, with :func:`pass_app`).

    @param lock: jobs holding the same lock run one at a time, in the order
        they were called.  A string, or a callable of the call's argument list
        returning the lock name (or C{None} for no lock).  If the callable
        raises, the call fails with C{EINVAL} "Error handling job lock:
        <message>" (and a log line).
    @param lock_queue_size: how many jobs may wait for the lock.  Beyond it, a
        call returns the last waiting job with that lock instead of queueing a
        new one.  C{0} makes a call fail with C{EBUSY} while the lock is held;
        C{None} queues without limit.
    @param logs: open C{job.logs_fd}, a file the job may write its log to.
    @param pipes: the pipes the caller must open: C{"input"} (an upload),
        C{"output"} (a download).
    @param check_pipes: refuse a call without those pipes.  Jobs that can run
        both ways set it to C{False} and call C{job.check_pipe} themselves.
    @param transient: the job sends no events and is never recorded in the
        history; C{core.get_jobs} lists it only until it ends.
    @param description: a callable of the call's arguments returning the
        job's initial description.  If it raises, that is logged and the job
        runs without one.
    @param abortable: C{core.job_abort} may abort the job.
    @param read_roles: roles that may see the job besides its owner.
    @param timeout: seconds the job may run (counted from the moment it
        starts C{RUNNING}, not while it waits for its lock) before it is
        aborted with the error "Job exceeded its time limit of N s"
        (see L{midjobs.job.Job.abort}); C{None} for the daemon's
        C{[jobs] default_timeout}, which is off by default.
    """
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf")
    ):
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    options = JobOptions(
        lock=lock,
        lock_queue_size=lock_queue_size,
        logs=logs,
        pipes=tuple(pipes or ()),
        check_pipes=check_pipes,
        transient=transient,
        description=description,
        abortable=abortable,
        read_roles=tuple(read_roles or ()),
        timeout=timeout,
    )
    for pipe in options.pipes:
        if pipe not in ("input", "output"):
            raise ValueError(f"unknown pipe {pipe!r}: pipes are 'input' and 'output'")

    def decorate(func: F) -> F:
        return _amend(func, job=options)

    return decorate


def private(func: F) -> F:
    """
    Hide the method from connections that did not set C{private_methods}.
    """
    return _amend(func, private=True)


@overload
def pass_app(func: F, /) -> F: ...


@overload
def pass_app(*, message_id: bool = False, require: bool = False) -> Callable[[F], F]: ...


def pass_app(func: F | None = None, /, *, message_id: bool = False, require: bool = False) -> F | Callable[[F], F]:
    """
    Give the method the calling session as its first argument after C{self}:
    C{@pass_app}, or as the original daemon writes it, C{@pass_app()}.

    The session is C{None} when the daemon itself calls the method, unless
    C{require}: then such a call fails with C{CallError} "`app` is
    required".  With C{message_id}, a method that is not a job gets the id
    of the caller's request (C{None} for the daemon's own calls) after the
    session.
    """

    def decorate(func: F) -> F:
        return _amend(func, pass_app=True, pass_message_id=message_id, app_required=require)

    return decorate if func is None else decorate(func)


def no_auth_required(func: F) -> F:
    """
    Let connections that have not logged in call the method.
    """
    return _amend(func, no_auth_required=True)


def no_authz_required(func: F) -> F:
    """
    Let every logged-in user call the method, whatever their roles.

    Methods without this, L{roles} or L{read_only} are for full
    administrators only.
    """
    return _amend(func, no_authz_required=True)


def read_only(func: F) -> F:
    """
    The method changes nothing: C{READONLY_ADMIN} may call it.
    """
    return _amend(func, read_only=True)


def roles(*names: str) -> Callable[[F], F]:
    """
    The roles allowed to call the method (besides full administrators).
    """

    def decorate(func: F) -> F:
        return _amend(func, roles=tuple(names))

    return decorate


def secret(*paths: str) -> Callable[[F], F]:
    """
    Arguments that hold secrets, hidden wherever the call is recorded (a
    job's C{arguments}, its events, the history, C{system.debug}).

    A path is a parameter's name, then keys into it: C{"password"},
    C{"data.password"}; C{*} stands for every item of a list or every value
    of a dict: C{"params.*.password"}.
    """
    for path in paths:
        if not path or any(not part for part in path.split(".")):
            raise ValueError(f"Not an argument path: {path!r}")

    def decorate(func: F) -> F:
        return _amend(func, secrets=method_spec(func).secrets + paths)

    return decorate


def secret_result(*paths: str) -> Callable[[F], F]:
    """
    Parts of the result that hold secrets, hidden wherever the job is
    recorded (its record, its events, the history, C{system.debug}).  The
    caller's own answer carries them, and so does C{core.get_jobs} with the
    option C{{"extra": {"raw_result": true}}} for the job's owner or a full
    administrator while the job is in memory.

    A path is keys (or list indexes) into the result, C{*} standing for every
    item: C{"key"}, C{"*.token"}.  Without a path, the whole result is secret.
    """
    keys = tuple(tuple(path.split(".")) for path in paths) or ((),)
    for path, parts in zip(paths, keys):
        if not all(parts):
            raise ValueError(f"Not a result path: {path!r}")

    def decorate(func: F) -> F:
        return _amend(func, result_secrets=method_spec(func).result_secrets + keys)

    return decorate


def forwards(method: str, arguments: str, results: str | None = None) -> Callable[[F], F]:
    """
    The call passes the argument lists at the path C{arguments} (as for
    L{secret}) to the method named by its parameter C{method}, as
    C{core.bulk} does: the secrets in them are that method's, hidden alike.
    With C{results}, the path in the result (as for L{secret_result}) of what
    those calls returned, whose secrets are hidden as that method says.
    """
    result_keys = tuple(results.split(".")) if results is not None else None

    def decorate(func: F) -> F:
        return _amend(func, forwards=Forwarding(method, arguments, result_keys))

    return decorate
