"""
Services for the browser tests of the parameter forms (C{test_webui_forms.py}),
loaded into the daemon as a --plugin module beside C{webui_services}: a
download and an upload whose signatures C{core.get_methods} describes, a
download whose parameters have no types, and their help texts.
"""

from __future__ import annotations

from typing import Any

from midjobs.errors import ValidationErrors
from midjobs.job import Job
from midjobs.service import Service, job


class FormsService(Service):
    namespace = "forms"

    @job(pipes=["output"])
    async def report(
        self,
        job: Job,
        title: str,
        copies: int,
        scale: float = 1.0,
        draft: bool = False,
        note: str | None = None,
        options: dict[str, Any] | None = None,
    ) -> int:
        """
        Write a small report: C{copies} lines of C{title}.

        The report is plain text, one line a copy, and each line has:

        - the title as given;
        - its copy number, from `1`;
        - the ``scale`` as a number.

        A C{copies} below 0 is refused, and so is a C{scale} of B{zero}.
        Returns the number of lines written.
        """
        errors = ValidationErrors()
        if copies < 0:
            errors.add("forms.report.copies", "Must be 0 or more")
        if scale == 0:
            errors.add("forms.report.scale", "Must not be zero")
        if errors:
            raise errors
        assert job.pipes.output is not None
        for copy in range(1, copies + 1):
            await job.pipes.output.write(f"{title} {copy} {scale}\n".encode())
        await job.pipes.output.close()
        return copies

    @job(pipes=["input"])
    async def store(self, job: Job, name: str, limit: int = 1024) -> int:
        """
        Read the upload (at most C{limit} bytes) and keep it as C{name}, which
        must be a plain name (letters, digits and C{_}).  Returns its size.
        """
        assert job.pipes.input is not None
        size = len(await job.pipes.input.read())
        errors = ValidationErrors()
        if not name.isidentifier():
            errors.add("forms.store.name", "Must be a plain name")
        if size > limit:
            errors.add("forms.store.limit", f"Smaller than the upload ({size} bytes)")
        if errors:
            raise errors
        return size

    @job(pipes=["output"])
    async def untyped(self, job: Job, first, second=None):  # type: ignore[no-untyped-def]  # no described signature, on purpose
        """
        Send C{first} back as text.  Its help holds markup that must stay
        text: <img src=x onerror="window.injected = 1"> and <b>bold</b>.
        """
        assert job.pipes.output is not None
        await job.pipes.output.write(repr([first, second]).encode())
        await job.pipes.output.close()
        return 0
