"""Turn an endpoint group's router into an API Gateway Lambda handler.

Every ``functions/<group>/handler.py`` is two lines over this, so runtime wiring,
Powertools set-up and the ASGI adapter cannot drift between Lambdas.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

from llm_orchestrator.api.app import create_app, lazy_runtime
from llm_orchestrator.runtime import Runtime, build_runtime

if TYPE_CHECKING:
    from aws_lambda_powertools import Metrics

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]


def _runtime_from_environment() -> Runtime:
    from llm_orchestrator.config import get_settings

    return build_runtime(get_settings())


def make_http_handler(
    service: str,
    routers: Sequence[APIRouter],
    runtime_factory: Callable[[], Runtime] = _runtime_from_environment,
) -> LambdaHandler:
    from aws_lambda_powertools import Logger, Metrics, Tracer
    from mangum import Mangum

    logger = Logger(service=service)
    metrics = Metrics(namespace="LLMOrchestrator", service=service)
    tracer = Tracer(service=service)
    # lifespan off: Mangum would run startup/shutdown around every invocation; the runtime is
    # built on the first request instead and reused while the container is warm.
    runtime = lazy_runtime(runtime_factory)
    app = create_app(routers, runtime)
    app.state.http_metrics.subscribe(partial(_emit_request_metric, metrics))
    adapter = Mangum(app, lifespan="off")

    @logger.inject_lambda_context(correlation_id_path="requestContext.requestId")
    @tracer.capture_lambda_handler(capture_response=False)
    @metrics.log_metrics
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        response: dict[str, Any] = adapter(event, context)
        return response

    def close() -> None:
        """Release the pool on the loop that opened it (tests; a container just goes away)."""
        if runtime.built is not None:
            asyncio.get_event_loop().run_until_complete(runtime.built.close())
            runtime.built = None

    handler.close = close
    return handler


def _emit_request_metric(metrics: Metrics, route: str, status: int) -> None:
    """The request as CloudWatch EMF: unlike ``/metrics``' per-container counter, CloudWatch
    sums these over every container. One request per invocation, so the dimensions set here
    are this invocation's alone (``log_metrics`` clears them after each flush)."""
    from aws_lambda_powertools.metrics import MetricUnit

    metrics.add_dimension(name="route", value=route)
    metrics.add_dimension(name="status", value=str(status))
    metrics.add_metric(name="HttpRequests", unit=MetricUnit.Count, value=1)
