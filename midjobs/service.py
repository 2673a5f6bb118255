"""
Services: a group of methods under a namespace, and the decorators that
describe them (from L{midjobs.decorators}, re-exported here)::

    from midjobs.service import Service, job

    class CoreService(Service):
        namespace = "core"

        @job(lock="rebuild", abortable=True)
        async def rebuild(self, job, data: dict | None = None) -> bool:
            ...

Every public method becomes ``core.<name>``.
"""

from __future__ import annotations

import inspect
import logging
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator

from .decorators import (
    Forwarding,
    JobOptions,
    MethodSpec,
    forwards,
    job,
    method_spec,
    no_auth_required,
    no_authz_required,
    pass_app,
    private,
    read_only,
    roles,
    secret,
    secret_result,
)

if TYPE_CHECKING:
    from .middleware import Middleware

__all__ = [
    "Service",
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


class Service:
    """
    A group of methods under C{namespace}.

    Subclasses set C{namespace} (or, as in the original, C{class Config:
    namespace = ...}) and define methods; every method whose name does not
    start with C{_} and is not defined here is exposed as
    C{<namespace>.<name>}.  C{setup} runs once when the daemon starts.

    @ivar logger: a standard L{logging} logger whose lines reach the
        daemon's log (L{midjobs.logs.StdlibBridge}), as the original's
        C{self.logger} does.
    """

    namespace: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        config = cls.__dict__.get("Config")
        if "namespace" not in cls.__dict__ and getattr(config, "namespace", None):
            cls.namespace = config.namespace  # type: ignore[union-attr]

    def __init__(self, middleware: Middleware) -> None:
        self.middleware = middleware
        self.logger = logging.getLogger(f"midjobs.services.{self.namespace}")

    async def setup(self) -> None:
        """
        Prepare the service; the daemon starts serving once all have run.
        """

    async def stop(self) -> None:
        """
        Release what the service holds when the daemon stops.
        """

    @classmethod
    def exposed_methods(cls) -> Iterator[tuple[str, Callable[..., Any]]]:
        """
        The exposed methods of the class, by name.
        """
        for name, member in inspect.getmembers(cls, inspect.isfunction):
            if name.startswith("_") or hasattr(Service, name):
                continue
            yield name, member
