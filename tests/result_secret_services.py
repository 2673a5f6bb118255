"""
Services for the result-secret tests (loaded as a --plugin): a job whose
result holds a secret, that users with the C{RUNNER} role may start.
"""

from __future__ import annotations

from typing import Any

from midjobs.job import Job
from midjobs.service import Service, job, roles, secret_result


class IssueService(Service):
    namespace = "issue"

    @roles("RUNNER")
    @secret_result("token", "grants.*.key")
    @job()
    async def credential(self, job: Job, name: str) -> dict[str, Any]:
        """
        A made-up credential for C{name}: its C{token} and each grant's C{key} are secret.
        """
        return {"name": name, "token": f"token-of-{name}", "grants": [{"scope": "a", "key": f"key-of-{name}"}]}
