"""Public health probes and Prometheus metrics."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from llm_orchestrator.api.deps import RuntimeDep, limit_by_client_ip
from llm_orchestrator.api.schemas.monitoring import CheckResult, HealthReport, Liveness
from llm_orchestrator.clock import utcnow
from llm_orchestrator.metrics.http import HttpRequestMetrics
from llm_orchestrator.runtime import Runtime

router = APIRouter(tags=["monitoring"], dependencies=[Depends(limit_by_client_ip)])
HEALTH_TIMEOUT_SECONDS = 3.0
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""``prometheus_client``'s text format 0.0.4, spelled out so that importing this router (the
monitoring Lambda's cold start) does not load the library before a scrape needs it."""


async def _database_check(runtime: Runtime) -> CheckResult:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
            await runtime.db.ping()
    except Exception as exc:  # any failure means unhealthy; the probe must still answer
        elapsed = (time.perf_counter() - started) * 1000
        return CheckResult(
            status="unhealthy", response_time_ms=round(elapsed, 2), error=type(exc).__name__
        )
    elapsed = (time.perf_counter() - started) * 1000
    return CheckResult(status="healthy", response_time_ms=round(elapsed, 2))


async def _report(runtime: Runtime) -> JSONResponse:
    checks = {"database": await _database_check(runtime)}
    healthy = all(c.status == "healthy" for c in checks.values())
    report = HealthReport(
        status="healthy" if healthy else "unhealthy", timestamp=utcnow(), checks=checks
    )
    return JSONResponse(report.model_dump(mode="json"), status_code=200 if healthy else 503)


@router.get("/health", response_model=HealthReport, responses={503: {"model": HealthReport}})
async def health(runtime: RuntimeDep) -> JSONResponse:
    return await _report(runtime)


@router.get("/health/ready", response_model=HealthReport, responses={503: {"model": HealthReport}})
async def ready(runtime: RuntimeDep) -> JSONResponse:
    return await _report(runtime)


@router.get("/health/live", response_model=Liveness)
async def live() -> Liveness:
    return Liveness(status="healthy", timestamp=utcnow())


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {PROMETHEUS_CONTENT_TYPE: {}}, "description": "Prometheus text format"}
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
