"""
A service whose signatures hold what C{core.get_methods} describes beyond
plain types (choices, defaults, a list's items, a C{TypedDict}'s members,
C{@param} texts, C{*args}), loaded into the daemon as a --plugin module by
C{test_arguments_wire.py}.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, Optional, Sequence, TypedDict

from midjobs.job import Job
from midjobs.service import Service, job


class Target(TypedDict):
    host: str
    port: NotRequired[int]
    tags: NotRequired[list[str]]


class SignaturesService(Service):
    namespace = "signatures"

    @job()
    async def copy(
        self,
        job: Job,
        level: Literal["low", "high"],
        target: Target,
        paths: Sequence[str] = (),
        mode: Optional[Literal["fast", "safe"]] = None,
        retries: int = 3,
        callback: object = object(),
    ) -> list[Any]:
        """
        Copy C{paths} to C{target}.

        @param level: how hard to try: C{"low"} gives up at
            the first error.
        @param target: where the copies go.
        :param paths: the files to copy, as ``/a/b``.
        @return: what it was given.
        """
        return [level, target, list(paths), mode, retries]

    async def concat(self, *parts: str) -> str:
        """
        The C{parts}, one after another.
        """
        return "".join(parts)
