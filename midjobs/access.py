"""
Who may do what: call a method, see a job, act on a job.

The rules, in one place:

  - C{FULL_ADMIN} may do everything.
  - A method is callable by every logged-in user if it is marked
    L{no_authz_required<midjobs.service.no_authz_required>}, by
    C{READONLY_ADMIN} if it is L{read_only<midjobs.service.read_only>}, and by
    the holders of any of its L{roles<midjobs.service.roles>}.  Anything else
    is for full administrators.
  - A job belongs to the stored user who started it, by the user's id
    (C{credentials.data.user_id}), never by name: a renamed user keeps their
    jobs, and a new user given an old name owns none of them.  The trusted
    UNIX-socket peer is an identity of its own (no user id): a stored user
    named C{root} owns none of its jobs.
  - Full and read-only administrators see every job.  Any other user sees the
    jobs they own and the jobs of methods whose C{read_roles} they hold; that
    holds for C{core.get_jobs} events too.
  - Jobs the daemon started itself belong to nobody.
  - Reading a job (waiting for it, its logs) needs seeing it; changing it
    (aborting it) needs owning it, or full administrative privileges.
  - Only a full administrator may force the abort of a job that is not
    abortable (C{core.job_abort(id, {"force": true})}).
  - A full lock queue (C{lock_queue_size}) hands its waiting job only to its
    owner or a full administrator.
"""

from __future__ import annotations

import errno
from typing import Any, Iterable, Mapping

from .auth.roles import READONLY_ADMIN
from .errors import CallError
from .decorators import MethodSpec

__all__ = [
    "AccessDenied",
    "JobAccessDenied",
    "may_call",
    "may_force_abort",
    "may_see_job",
    "owns_or_administers",
    "check_job_access",
    "owner_id",
    "owns_job",
    "sees_every_job",
    "visible_jobs_filter",
]

NOT_OWNER = "Job is not owned by current session"
INTERNAL_JOB = "Only users with full administrative privileges can access internally ran jobs"


class AccessDenied(CallError):
    """
    The caller may not call this method (errno C{EACCES}).
    """

    def __init__(self) -> None:
        super().__init__("Not authorized", errno.EACCES)


class JobAccessDenied(CallError):
    """
    The caller may not see or act on this job (errno C{EPERM}).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, errno.EPERM)


def may_call(user: Any, spec: MethodSpec) -> bool:
    """
    Whether C{user} (an L{midjobs.auth.IUser}, or C{None} before login) may
    call a method described by C{spec}.
    """
    if spec.no_auth_required:
        return True
    if user is None:
        return False
    if user.is_full_admin or spec.no_authz_required:
        return True
    if spec.read_only and READONLY_ADMIN in user.roles:
        return True
    return not user.roles.isdisjoint(spec.roles)


def sees_every_job(user: Any) -> bool:
    """
    Whether C{user} sees every job: full and read-only administrators.
    """
    return user.is_full_admin or READONLY_ADMIN in user.roles


def owner_id(credentials: Mapping[str, Any] | None) -> int | None:
    """
    The id of the stored user who owns a job started with C{credentials} (a
    record's C{credentials}), or L{None}: the daemon, the trusted local peer,
    or a login that named no stored user.
    """
    if not credentials:
        return None
    data = credentials.get("data")
    user_id = data.get("user_id") if isinstance(data, Mapping) else None
    return user_id if isinstance(user_id, int) and not isinstance(user_id, bool) else None


def owns_job(user: Any, credentials: Mapping[str, Any] | None) -> bool:
    """
    Whether C{user} is the stored user who started a job with C{credentials}.
    """
    return user.user_id is not None and owner_id(credentials) == user.user_id


def may_see_job(user: Any, credentials: Mapping[str, Any] | None, read_roles: Iterable[str]) -> bool:
    """
    Whether C{user} may see a job started with C{credentials} (the record's
    C{credentials}) of a method with C{read_roles}.
    """
    if sees_every_job(user) or owns_job(user, credentials):
        return True
    return not user.roles.isdisjoint(read_roles)


def check_job_access(
    user: Any, credentials: Mapping[str, Any] | None, read_roles: Iterable[str], *, change: bool
) -> None:
    """
    Raise L{JobAccessDenied} unless C{user} may read (or, with C{change},
    abort) a job started with C{credentials} of a method with C{read_roles}.
    """
    if user.is_full_admin or owns_job(user, credentials):
        return
    if not change and may_see_job(user, credentials, read_roles):
        return
    raise JobAccessDenied(INTERNAL_JOB if not credentials else NOT_OWNER)


def may_force_abort(user: Any) -> bool:
    """
    Whether C{user} (L{None}: the daemon itself) may abort a job that is not
    abortable: full administrators only.
    """
    return user is None or user.is_full_admin


def owns_or_administers(user: Any, credentials: Mapping[str, Any] | None) -> bool:
    """
    Whether C{user} (L{None}: the daemon itself) is the owner of a job
    started with C{credentials}, or a full administrator.  Such a caller may
    be handed a waiting job instead of queuing its own (C{lock_queue_size}, as
    in the original), and see its result with its secrets.
    """
    return user is None or user.is_full_admin or owns_job(user, credentials)


#: A filter no job passes (C{id} is never in an empty list; SQL answers it at once).
_NO_JOB = ["id", "in", []]


def visible_jobs_filter(user: Any, readable_methods: Iterable[str]) -> list[Any]:
    """
    The C{core.get_jobs} filters that keep only the jobs C{user} may see:
    none for those who see every job.  The user's own jobs are found by
    C{credentials.data.user_id}, in memory and in the history alike.

    @param readable_methods: the methods whose C{read_roles} C{user} holds.
    """
    if sees_every_job(user):
        return []
    readable = sorted(readable_methods)
    mine = ["credentials.data.user_id", "=", user.user_id] if user.user_id is not None else None
    if mine is None:
        return [["method", "in", readable]] if readable else [_NO_JOB]
    if not readable:
        return [mine]
    return [["OR", [mine, ["method", "in", readable]]]]
