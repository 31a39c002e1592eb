"""Public health probes and Prometheus metrics."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from llm_orchestrator.api.deps import RuntimeDep, limit_by_client_ip
from llm_orchestrator.api.schemas.common import ERROR_RESPONSES
from llm_orchestrator.api.schemas.monitoring import CheckResult, HealthReport, Liveness
from llm_orchestrator.clock import utcnow
from llm_orchestrator.metrics.http import HttpRequestMetrics
from llm_orchestrator.runtime import Runtime

router = APIRouter(tags=["monitoring"])
# Public, so limited per client IP (documented: 429 in the error envelope).
RATE_LIMITED: dict[int | str, dict[str, Any]] = {429: ERROR_RESPONSES[429]}
_limited = [Depends(limit_by_client_ip)]
HEALTH_TIMEOUT_SECONDS = 3.0
"""The whole probe, the per-IP count included, answers within this."""
_HEALTH_MARGIN_SECONDS = 0.2
"""Kept back from the budget for rendering and sending the answer."""
_MIN_PING_SECONDS = 0.1
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""``prometheus_client``'s text format 0.0.4, spelled out so that importing this router (the
monitoring Lambda's cold start) does not load the library before a scrape needs it."""


def _remaining_budget(request: Request) -> float:
    received = getattr(request.state, "received_at", None)
    elapsed = time.monotonic() - received if received is not None else 0.0
    return max(_MIN_PING_SECONDS, HEALTH_TIMEOUT_SECONDS - _HEALTH_MARGIN_SECONDS - elapsed)


async def _database_check(runtime: Runtime, budget: float) -> CheckResult:
    started = time.perf_counter()
    try:
        await runtime.db.ping(timeout=budget)
    except Exception as exc:  # any failure means unhealthy; the probe must still answer
        elapsed = (time.perf_counter() - started) * 1000
        return CheckResult(
            status="unhealthy", response_time_ms=round(elapsed, 2), error=type(exc).__name__
        )
    elapsed = (time.perf_counter() - started) * 1000
    return CheckResult(status="healthy", response_time_ms=round(elapsed, 2))


async def _report(request: Request, runtime: Runtime) -> JSONResponse:
    checks = {"database": await _database_check(runtime, _remaining_budget(request))}
    healthy = all(c.status == "healthy" for c in checks.values())
    report = HealthReport(
        status="healthy" if healthy else "unhealthy", timestamp=utcnow(), checks=checks
    )
    return JSONResponse(report.model_dump(mode="json"), status_code=200 if healthy else 503)


@router.get(
    "/health",
    response_model=HealthReport,
    responses={503: {"model": HealthReport}, **RATE_LIMITED},
    dependencies=_limited,
)
async def health(request: Request, runtime: RuntimeDep) -> JSONResponse:
    return await _report(request, runtime)


@router.get(
    "/health/ready",
    response_model=HealthReport,
    responses={503: {"model": HealthReport}, **RATE_LIMITED},
    dependencies=_limited,
)
async def ready(request: Request, runtime: RuntimeDep) -> JSONResponse:
    return await _report(request, runtime)


@router.get("/health/live", response_model=Liveness)
async def live() -> Liveness:
    """Touches nothing: no database, not even the per-IP rate limiter (which counts in the
    database), so a hung database never makes the process look dead."""
    return Liveness(status="healthy", timestamp=utcnow())


@router.get(
    "/metrics",
    dependencies=_limited,
    response_class=Response,
    responses={
        200: {"content": {PROMETHEUS_CONTENT_TYPE: {}}, "description": "Prometheus text format"},
        **RATE_LIMITED,
    },
)
async def metrics(request: Request, runtime: RuntimeDep) -> Response:
    from llm_orchestrator.metrics.prometheus import (
        CONTENT_TYPE,
        STEP_DURATION_BUCKETS_SECONDS,
        render,
    )

    snapshot = await runtime.metrics.snapshot(STEP_DURATION_BUCKETS_SECONDS)
    usage = await runtime.usage.totals()
    http: HttpRequestMetrics | None = getattr(request.app.state, "http_metrics", None)
    return Response(render(snapshot, http, usage), media_type=CONTENT_TYPE)
