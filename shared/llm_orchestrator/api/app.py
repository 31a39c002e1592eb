"""The FastAPI app factory: one app for any set of endpoint-group routers.

Locally one process mounts every group; on AWS each Lambda mounts just its own group. The
runtime (database, services) is built lazily on first use, so importing a handler or
creating the app does no I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from fastapi import APIRouter, FastAPI

from llm_orchestrator import __version__
from llm_orchestrator.api.errors import install_error_handlers
from llm_orchestrator.api.headers import ResponseHeadersMiddleware
from llm_orchestrator.metrics.http import HttpMetricsMiddleware, HttpRequestMetrics
from llm_orchestrator.runtime import Runtime

API_PREFIX = "/api/v1"

RuntimeProvider = Callable[[], Awaitable[Runtime]]


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


def fixed_runtime(runtime: Runtime) -> RuntimeProvider:
    async def provider() -> Runtime:
        return runtime

    return provider


def create_app(
    routers: Sequence[APIRouter],
    runtime_provider: RuntimeProvider,
    *,
    title: str = "LLM Orchestrator API",
) -> FastAPI:
    app = FastAPI(
        title=title,
        version=__version__,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.runtime_provider = runtime_provider
    install_error_handlers(app)
    app.add_middleware(ResponseHeadersMiddleware)
    # Outermost, so it counts the status the client finally gets; per app, hence per process.
    app.state.http_metrics = HttpRequestMetrics()
    app.add_middleware(HttpMetricsMiddleware, metrics=app.state.http_metrics)
    for router in routers:
        app.include_router(router, prefix=API_PREFIX)
    return app
