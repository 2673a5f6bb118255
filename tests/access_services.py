"""
Services for the access tests: methods with roles, jobs that wait to be
released, a job started by the daemon itself, a job with a secret argument.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from midjobs.job import Job
from midjobs.service import Service, job, no_authz_required, pass_app, read_only, roles, secret


class AccessService(Service):
    namespace = "access"

    def __init__(self, middleware: Any) -> None:
        super().__init__(middleware)
        self._gates: dict[str, Deferred[None]] = {}

    def _gate(self, key: str) -> Deferred[None]:
        return self._gates.setdefault(key, Deferred())

    @roles("RUNNER")
    @job(abortable=True, logs=True)
    async def hold(self, job: Job, key: str) -> str:
        """
        Write a log line, then wait until C{access.release(key)}.
        """
        job.logs_fd.write(f"holding {key}\n".encode())
        await self._gate(key)
        job.logs_fd.write(f"released {key}\n".encode())
        return key

    @roles("RUNNER")
    @job(read_roles=["AUDITOR"])
    async def audited(self, job: Job, key: str) -> str:
        """
        Wait until released; C{AUDITOR}s see these jobs too.
        """
        await self._gate(key)
        return key

    @roles("RUNNER")
    @secret("data.token", "data.nested.*.password")
    @job()
    async def with_secret(self, job: Job, data: dict) -> int:
        """
        A job with secret arguments; returns the token's length to prove it saw it.
        """
        return len(data["token"])

    async def release(self, key: str) -> None:
        """
        Let the jobs waiting on C{key} go on (full administrators only).
        """
        gate = self._gate(key)
        if not gate.called:
            gate.callback(None)

    async def start_internal(self, key: str) -> int:
        """
        Start C{access.hold(key)} as the daemon itself; its id.
        """
        started = await self.middleware.call("access.hold", key)
        return started.id

    @read_only
    async def peek(self) -> str:
        """
        Read-only: C{READONLY_ADMIN} may call it.
        """
        return "peeked"

    @no_authz_required
    @pass_app
    async def whoami(self, app: Any) -> dict:
        """
        Any logged-in user: who and with which roles.
        """
        return {"username": app.user.username, "roles": sorted(app.user.roles)}
