"""Hand-written state machines in the compiled shape of docs/asl.md, a step runner played by
:class:`FakeStepRunner`, and ``execute`` on fake timers: what the interpreter tests share."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from llm_orchestrator.engine.asl import (
    LAMBDA_INVOKE,
    LAMBDA_INVOKE_WAIT_FOR_TASK_TOKEN,
    ExecutionResult,
    FakeTimers,
    StopSignal,
    TaskTokenRegistry,
    Timers,
    load_state_machine,
    run_execution,
)

RUNNER = "arn:aws:lambda:us-east-1:123456789012:function:llmo-step-runner"
EXECUTION_ARN = "arn:aws:states:us-east-1:123456789012:execution:wf:exec-1"
INPUT = {"execution_id": "exec-1"}


class ProviderRateLimited(Exception):
    pass


class ProviderUnavailable(Exception):
    pass


class WorkflowPaused(Exception):
    pass


def provider_retry(**overrides: Any) -> dict[str, Any]:
    return {
        "ErrorEquals": ["ProviderRateLimited", "ProviderUnavailable"],
        "IntervalSeconds": 2,
        "MaxAttempts": 3,
        "BackoffRate": 2,
        "MaxDelaySeconds": 60,
        "JitterStrategy": "NONE",
        **overrides,
    }


def catch(errors: list[str], target: str) -> dict[str, Any]:
    return {"ErrorEquals": errors, "Next": target, "ResultPath": "$.error"}


def payload(action: str, step_id: str, **paths: str) -> dict[str, Any]:
    return {
        "FunctionName": RUNNER,
        "Payload": {
            "action": action,
            "execution_id.$": "$.execution_id",
            "step_id": step_id,
            **{f"{key}.$": path for key, path in paths.items()},
        },
    }


def step_states(
    step_id: str,
    transition: dict[str, Any],
    *,
    retry: list[dict[str, Any]] | None = None,
    timeout_seconds: int | None = None,
) -> dict[str, Any]:
    """The five states the compiler emits for one step."""
    run: dict[str, Any] = {
        "Type": "Task",
        "Resource": LAMBDA_INVOKE,
        "Parameters": payload("run", step_id, attempt="$$.State.RetryCount"),
        "ResultPath": None,
        "Retry": [provider_retry()] if retry is None else retry,
        "Catch": [
            catch(["WorkflowPaused"], f"{step_id}__paused"),
            catch(["WorkflowCancelled"], f"{step_id}__cancelled"),
            catch(["States.ALL"], f"{step_id}__failed"),
        ],
        **transition,
    }
    if timeout_seconds is not None:
        run["TimeoutSeconds"] = timeout_seconds
    return {
        step_id: run,
        f"{step_id}__paused": {
            "Type": "Task",
            "Resource": LAMBDA_INVOKE_WAIT_FOR_TASK_TOKEN,
            "Parameters": payload("park", step_id, task_token="$$.Task.Token"),
            "ResultPath": None,
            "Catch": [
                catch(["WorkflowCancelled"], f"{step_id}__cancelled"),
                catch(["States.ALL"], f"{step_id}__failed"),
            ],
            "Next": step_id,
        },
        f"{step_id}__failed": {
            "Type": "Task",
            "Resource": LAMBDA_INVOKE,
            "Parameters": payload("fail", step_id, error="$.error"),
            "ResultPath": None,
            "Next": f"{step_id}__fail",
        },
        f"{step_id}__fail": {"Type": "Fail", "Error": "StepFailed"},
        f"{step_id}__cancelled": {"Type": "Fail", "Error": "WorkflowCancelled"},
    }


def workflow(
    *levels: str | tuple[str, ...], timeout_seconds: int = 3600, **step_options: Any
) -> dict[str, Any]:
    """A compiled-shape machine: a string level is one step, a tuple a Parallel of steps."""
    names = [
        level if isinstance(level, str) else f"parallel__{i}" for i, level in enumerate(levels)
    ]
    states: dict[str, Any] = {}
    for position, level in enumerate(levels):
        following = names[position + 1] if position + 1 < len(levels) else "Done"
        if isinstance(level, str):
            states.update(step_states(level, {"Next": following}, **step_options))
            continue
        branches = [
            {"StartAt": step, "States": step_states(step, {"End": True}, **step_options)}
            for step in level
        ]
        states[names[position]] = {
            "Type": "Parallel",
            "Branches": branches,
            "ResultPath": None,
            "Next": following,
        }
    states["Done"] = {"Type": "Succeed"}
    return {
        "StartAt": names[0],
        "States": states,
        "TimeoutSeconds": timeout_seconds,
        "Version": "1.0",
    }


Behaviour = Callable[[dict[str, Any]], Awaitable[Any]]


class FakeStepRunner:
    """Plays the step-runner Lambda: records every call, parks on request, follows a script.

    ``script[step_id]`` lists what successive ``run`` calls of that step do: an exception
    to raise, or an async function of the payload to await. Once it is used up, runs
    succeed at once.
    """

    def __init__(self, script: dict[str, list[BaseException | Behaviour]] | None = None) -> None:
        self.script = script or {}
        self.calls: list[dict[str, Any]] = []
        self.tokens: asyncio.Queue[str] = asyncio.Queue()

    async def __call__(self, function_name: str, payload: dict[str, Any]) -> Any:
        assert function_name == RUNNER
        self.calls.append(payload)
        if payload["action"] == "park":
            self.tokens.put_nowait(payload["task_token"])
            return {"parked": True}
        if payload["action"] == "run" and self.script.get(payload["step_id"]):
            outcome = self.script[payload["step_id"]].pop(0)
            if isinstance(outcome, BaseException):
                raise outcome
            return await outcome(payload)
        return {"status": "done"}

    def trace(self) -> list[tuple[str, str]]:
        return [(call["action"], call["step_id"]) for call in self.calls]

    def calls_for(self, action: str, step_id: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["action"] == action and c["step_id"] == step_id]


def hang_until_cancelled(log: list[str], name: str) -> Behaviour:
    async def hang(payload: dict[str, Any]) -> Any:
        log.append(f"{name} started")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            log.append(f"{name} cancelled")
            raise

    return hang


async def execute(
    definition: dict[str, Any],
    runner: Callable[[str, dict[str, Any]], Awaitable[Any]],
    *,
    timers: Timers | None = None,
    tokens: TaskTokenRegistry | None = None,
    rng: random.Random | None = None,
    stop: StopSignal | None = None,
    history: bool = True,
) -> ExecutionResult:
    return await run_execution(
        load_state_machine(definition),
        INPUT,
        execution_arn=EXECUTION_ARN,
        invoker=runner,
        token_registry=TaskTokenRegistry() if tokens is None else tokens,
        timers=FakeTimers() if timers is None else timers,
        rng=random.Random(7) if rng is None else rng,
        stop=stop,
        history=history,
    )
