"""The step-runner Lambda: Step Functions Task payloads in, the step runner's answer out.

An exception leaves the handler unchanged, so Lambda reports its class name as the error
type and the state machine's Retry and Catch match it (``ProviderRateLimited``,
``WorkflowPaused``, …). One event loop per warm container, because the database pool and
the provider clients belong to the loop that opened them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from llm_orchestrator.clock import utcnow
from llm_orchestrator.config import get_settings
from llm_orchestrator.engine.stepfunctions_tokens import StepFunctionsTaskTokens
from llm_orchestrator.runtime import Runtime, build_runtime
from llm_orchestrator.steps.runner import StepRunner, TaskTokenSender
from llm_orchestrator.store.executions import ExecutionRepository


def _runtime_from_environment() -> Runtime:
    return build_runtime(get_settings())


class StepRunnerLambda:
    """The handler: built lazily on the first invocation, reused while the container is warm."""

    def __init__(
        self,
        runtime_factory: Callable[[], Runtime] = _runtime_from_environment,
        tokens: TaskTokenSender | None = None,
    ) -> None:
        self._runtime_factory = runtime_factory
        self._tokens = tokens
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runtime: Runtime | None = None
        self._runner: StepRunner | None = None

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        if self._loop is None or self._runner is None:
            self._runtime = self._runtime_factory()
            self._runner = StepRunner(
                ExecutionRepository(self._runtime.db),
                self._runtime.providers,
                self._tokens or StepFunctionsTaskTokens(),
                clock=utcnow,
            )
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(self._runner.handle(event))

    def close(self) -> None:
        """Release the pool and the loop (tests; a Lambda container just goes away)."""
        if self._loop is not None and self._runtime is not None:
            self._loop.run_until_complete(self._runtime.close())
            self._loop.close()
        self._loop = self._runtime = self._runner = None


def make_step_runner_handler(
    runtime_factory: Callable[[], Runtime] = _runtime_from_environment,
    tokens: TaskTokenSender | None = None,
) -> StepRunnerLambda:
    return StepRunnerLambda(runtime_factory, tokens)
