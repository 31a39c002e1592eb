"""The FastAPI app factory: one app for any set of endpoint-group routers.

Locally one process mounts every group; on AWS each Lambda mounts just its own group. The
runtime (database, services) is built lazily on first use, so importing a handler or
creating the app does no I/O.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import compile_path
from starlette.types import Receive, Scope, Send

from llm_orchestrator import __version__
from llm_orchestrator.api.body_limit import MAX_BODY_BYTES, BodySizeLimitMiddleware
from llm_orchestrator.api.errors import install_error_handlers
from llm_orchestrator.api.fast_path import HotReads
from llm_orchestrator.api.headers import ResponseHeadersMiddleware
from llm_orchestrator.api.hot_writes import HotWrites
from llm_orchestrator.api.storable import reject_unstorable_input
from llm_orchestrator.metrics.http import HttpMetricsMiddleware, HttpRequestMetrics

if TYPE_CHECKING:
    from llm_orchestrator.runtime import Runtime

API_PREFIX = "/api/v1"

RuntimeProvider = Callable[[], Awaitable["Runtime"]]


class LazyRuntime:
    """Build the runtime once, on first request, and share it afterwards."""

    def __init__(self, factory: Callable[[], Runtime]) -> None:
        self._factory = factory
        self._lock = asyncio.Lock()
        self.built: Runtime | None = None

    async def __call__(self) -> Runtime:
        if self.built is None:
            async with self._lock:
                if self.built is None:
                    self.built = self._factory()
        return self.built


def lazy_runtime(factory: Callable[[], Runtime]) -> LazyRuntime:
    return LazyRuntime(factory)


class FixedRuntime:
    """A runtime built already (a local server's), shared by every request."""

    __slots__ = ("built",)

    def __init__(self, runtime: Runtime) -> None:
        self.built = runtime

    async def __call__(self) -> Runtime:
        return self.built


def fixed_runtime(runtime: Runtime) -> RuntimeProvider:
    return FixedRuntime(runtime)


def _document_security(document: dict[str, Any], routers: Sequence[APIRouter]) -> None:
    """Every operation that authenticates names the Bearer and API-key schemes.

    The caller's dependency reads the credential headers itself (``api/deps.py``: one
    dependency instead of three per request), so FastAPI does not see the schemes; they are
    written here as FastAPI would have written them.
    """
    from llm_orchestrator.api.deps import authenticates, security_schemes

    schemes = security_schemes()
    paths = document.get("paths", {})
    for route in (r for router in routers for r in router.routes):
        if not isinstance(route, APIRoute) or not _authenticates(route.dependant, authenticates):
            continue
        operations = paths.get(API_PREFIX + route.path_format, {})
        for method in route.methods or ():
            operation = operations.get(method.lower())
            if operation is not None:
                operation["security"] = [{name: []} for name in schemes]
                document.setdefault("components", {}).setdefault("securitySchemes", {}).update(
                    schemes
                )


def _authenticates(dependant: Dependant, authenticates: Callable[[Any], bool]) -> bool:
    return any(
        authenticates(sub.call) or _authenticates(sub, authenticates)
        for sub in dependant.dependencies
    )


def _document_what_is_enforced(app: FastAPI, routers: Sequence[APIRouter]) -> None:
    """The OpenAPI document says what the server enforces.

    FastAPI's automatic ``422 HTTPValidationError`` is dropped: this API answers every
    validation error with ``400`` in the error envelope (``api/errors.py``), which every
    operation already documents. The request side gets the rules every request is held to
    (``api/openapi_input.py``) and the workflow definition's schema.
    """
    render = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            from llm_orchestrator.api.openapi_input import describe_request_input
            from llm_orchestrator.api.schemas.triggers import trigger_schemas
            from llm_orchestrator.api.schemas.workflows import definition_schemas

            document = render()
            for operations in document.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            schemas = document.get("components", {}).get("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
            describe_request_input(document, definition_schemas() | trigger_schemas())
            _document_security(document, routers)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


TELEMETRY_RECHECK_SECONDS = 1.0
"""How soon an OpenTelemetry provider configured while serving sends hot reads through
FastAPI's instrumentation too."""


class OrchestratorApp(FastAPI):
    """FastAPI, with the plain reads of the hottest routes answered at its front
    (:class:`HotReads`: ahead of the middleware stack and the router, which cost a plain
    read more CPU than its own work)."""

    hot_reads: HotReads | None = None
    hot_writes: HotWrites | None = None
    """The plain submits answered at the front too (``api/hot_writes.py``)."""
    _telemetry_seen: tuple[float, bool] = (-TELEMETRY_RECHECK_SECONDS, False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._telemetry_on():
            reads, writes = self.hot_reads, self.hot_writes
            if reads is not None and await reads.answer(self, scope, receive, send):
                return
            if writes is not None and await writes.answer(
                self, scope, receive, send, super().__call__
            ):
                return
        await super().__call__(scope, receive, send)

    def _telemetry_on(self) -> bool:
        """Whether FastAPI's own OpenTelemetry instrumentation is on (an OpenTelemetry
        provider is configured): then every request goes through FastAPI to be traced.
        Asked again at most every ``TELEMETRY_RECHECK_SECONDS`` (FastAPI's own check looks
        at the global providers on every request, a measurable part of a hot read)."""
        checked_at, on = self._telemetry_seen
        now = time.monotonic()
        if now - checked_at >= TELEMETRY_RECHECK_SECONDS:
            telemetry = getattr(self, "_native_telemetry", None)
            on = telemetry is not None and bool(telemetry.enabled())
            self._telemetry_seen = (now, on)
        return on


def create_app(
    routers: Sequence[APIRouter],
    runtime_provider: RuntimeProvider,
    *,
    title: str = "LLM Orchestrator API",
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    app = OrchestratorApp(
        title=title,
        version=__version__,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        # On every route, ahead of its own dependencies: a value PostgreSQL cannot store is
        # refused before any handler writes anything.
        dependencies=[Depends(reject_unstorable_input)],
    )
    app.state.runtime_provider = runtime_provider
    install_error_handlers(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(ResponseHeadersMiddleware)
    # Outermost, so it counts the status the client finally gets; per app, hence per process.
    app.state.http_metrics = HttpRequestMetrics()
    app.add_middleware(HttpMetricsMiddleware, metrics=app.state.http_metrics)
    for router in routers:
        app.include_router(router, prefix=API_PREFIX)
    _document_what_is_enforced(app, routers)
    app.hot_reads = HotReads(
        API_PREFIX,
        [route for router in routers for route in router.routes if isinstance(route, APIRoute)],
        app.state.http_metrics,
        app.exception_handlers,
    )
    writes = HotWrites(
        API_PREFIX,
        [route for router in routers for route in router.routes if isinstance(route, APIRoute)],
        app.state.http_metrics,
        app.exception_handlers,
        max_body_bytes,
    )
    app.hot_writes = writes if writes else None
    # Starlette's 405 names only the methods of the first route on the path; the error
    # handler answers with every method the path has (``Allow``, RFC 9110 §10.2.1).
    app.state.route_methods = [
        (compile_path(API_PREFIX + route.path)[0], frozenset(route.methods or ()))
        for router in routers
        for route in router.routes
        if isinstance(route, APIRoute)
    ]
    return app
