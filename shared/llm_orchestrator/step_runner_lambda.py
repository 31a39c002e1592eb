"""The step-runner Lambda: Step Functions Task payloads in, the step runner's answer out.

An exception leaves the handler unchanged, so Lambda reports its class name as the error
type and the state machine's Retry and Catch match it (``ProviderRateLimited``,
``WorkflowPaused``, …). One event loop per warm container, because the database pool and
the provider clients belong to the loop that opened them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

from llm_orchestrator.runtime import Runtime, build_runtime

if TYPE_CHECKING:
    from aws_lambda_powertools import Metrics

    from llm_orchestrator.steps.runner import StepRunner, TaskTokenSender


def _runtime_from_environment() -> Runtime:
    from llm_orchestrator.config import get_settings

    return build_runtime(get_settings(), serves_http=False)


class StepRunnerLambda:
    """The handler: built lazily on the first invocation, reused while the container is warm."""

    def __init__(
        self,
        runtime_factory: Callable[[], Runtime] = _runtime_from_environment,
        tokens: TaskTokenSender | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._runtime_factory = runtime_factory
        self._tokens = tokens
        self._sleep = sleep
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runtime: Runtime | None = None
        self._runner: StepRunner | None = None

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        if self._loop is None or self._runner is None:
            self._runtime = self._runtime_factory()
            self._runner = self._runtime.step_runner(
                self._tokens or _step_functions_tokens(),
                # Step Functions' Retry cannot honour a provider's Retry-After: wait here.
                wait_for_retry_after=True,
                sleep=self._sleep,
            )
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(
            self._runner.handle(event, time_left=_time_left(context))
        )

    def close(self) -> None:
        """Release the pool and the loop (tests; a Lambda container just goes away)."""
        if self._loop is not None and self._runtime is not None:
            self._loop.run_until_complete(self._runtime.close())
            self._loop.close()
        self._loop = self._runtime = self._runner = None


def _time_left(context: Any) -> Callable[[], float] | None:
    """Seconds the invocation has left, from the Lambda context (None without one)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(remaining):
        return None
    return lambda: float(remaining()) / 1000.0


def _step_functions_tokens() -> TaskTokenSender:
    from llm_orchestrator.engine.stepfunctions_tokens import StepFunctionsTaskTokens

    return StepFunctionsTaskTokens()


class InstrumentedHandler(Protocol):
    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]: ...

    def close(self) -> None: ...


def make_step_runner_handler(
    runtime_factory: Callable[[], Runtime] = _runtime_from_environment,
    tokens: TaskTokenSender | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    *,
    service: str = "step_runner",
) -> InstrumentedHandler:
    """The Lambda handler with Powertools: logs correlated by execution id, a trace that
    never captures the response (step outputs), and EMF metrics for each step it runs.

    ``sleep`` waits out a provider's Retry-After before a retryable error is raised.
    ``service`` names the function in logs, traces and metrics: the same code runs as the
    step runner and as the vector runner, which differ only in their dependency bundle."""
    from aws_lambda_powertools import Logger, Metrics, Tracer

    core = StepRunnerLambda(runtime_factory, tokens, sleep)
    logger = Logger(service=service)
    metrics = Metrics(namespace="LLMOrchestrator", service=service)
    tracer = Tracer(service=service)

    @logger.inject_lambda_context(correlation_id_path="execution_id")
    @tracer.capture_lambda_handler(capture_response=False)
    @metrics.log_metrics
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        result = core(event, context)
        emit_step_metrics(metrics, result)
        return result

    handler.close = core.close
    return cast(InstrumentedHandler, handler)


def emit_step_metrics(metrics: Metrics, result: dict[str, Any]) -> None:
    """The same figures ``/metrics`` reads from the database, as CloudWatch EMF: duration
    and tokens of a step this invocation ran (a reused result cost nothing)."""
    from aws_lambda_powertools.metrics import MetricUnit

    usage = result.get("usage")
    if result.get("reused", True) or not isinstance(usage, dict):
        return
    metrics.add_dimension(name="step_type", value=str(result.get("step_type")))
    metrics.add_dimension(name="provider", value=str(result.get("provider") or "none"))
    metrics.add_metric(
        name="StepDuration", unit=MetricUnit.Milliseconds, value=float(usage["latency_ms"])
    )
    for direction in ("input", "output"):
        tokens = usage.get(f"{direction}_tokens")
        if tokens is not None:
            metrics.add_metric(
                name=f"ProviderTokens{direction.title()}", unit=MetricUnit.Count, value=tokens
            )
