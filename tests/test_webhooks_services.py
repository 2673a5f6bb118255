"""
Services for the webhook tests (loaded as a --plugin): a job whose argument
and result hold secrets.
"""

from __future__ import annotations

from midjobs.job import Job
from midjobs.service import Service, job, secret, secret_result


class HooksService(Service):
    namespace = "hooks"

    @secret("password")
    @secret_result("token")
    @job()
    async def log_in(self, job: Job, username: str, password: str) -> dict:
        """
        A made-up login: its C{password} argument and the C{token} of its result are secret.
        """
        return {"username": username, "token": f"token-of-{password}"}
