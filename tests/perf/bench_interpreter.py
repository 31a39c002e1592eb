"""Interpreter overhead per step: a 20-step compiled chain with an invoker that costs nothing.

Run: ``python -m tests.perf.bench_interpreter``. Prints
``interpreter_overhead_per_step_us_median=<n>``, the median over repeated executions of
(execution wall time / steps), so it measures loading nothing and interpreting everything:
payload rendering, history, the execution timer, state transitions.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from typing import Any

from llm_orchestrator.engine.asl import (
    LAMBDA_INVOKE,
    LAMBDA_INVOKE_WAIT_FOR_TASK_TOKEN,
    ExecutionStatus,
    StateMachine,
    SystemTimers,
    TaskTokenRegistry,
    load_state_machine,
    run_execution,
)

STEPS = 20
WARMUP_RUNS = 50
MEASURED_RUNS = 500
RUNNER = "arn:aws:lambda:us-east-1:123456789012:function:llmo-step-runner"


def _catch(errors: list[str], target: str) -> dict[str, Any]:
    return {"ErrorEquals": errors, "Next": target, "ResultPath": "$.error"}


def _payload(action: str, step_id: str, **paths: str) -> dict[str, Any]:
    fields = {"action": action, "execution_id.$": "$.execution_id", "step_id": step_id}
    return {"FunctionName": RUNNER, "Payload": fields | {f"{k}.$": v for k, v in paths.items()}}


def _step(step_id: str, following: str) -> dict[str, Any]:
    """The compiler's five states for one step (docs/asl.md)."""
    return {
        step_id: {
            "Type": "Task",
            "Resource": LAMBDA_INVOKE,
            "Parameters": _payload("run", step_id, attempt="$$.State.RetryCount"),
            "ResultPath": None,
            "Retry": [
                {
                    "ErrorEquals": ["ProviderRateLimited", "ProviderUnavailable"],
                    "IntervalSeconds": 2,
                    "MaxAttempts": 3,
                    "BackoffRate": 2,
                    "MaxDelaySeconds": 60,
                    "JitterStrategy": "FULL",
                }
            ],
            "Catch": [
                _catch(["WorkflowPaused"], f"{step_id}__paused"),
                _catch(["WorkflowCancelled"], f"{step_id}__cancelled"),
                _catch(["States.ALL"], f"{step_id}__failed"),
            ],
            "Next": following,
        },
        f"{step_id}__paused": {
            "Type": "Task",
            "Resource": LAMBDA_INVOKE_WAIT_FOR_TASK_TOKEN,
            "Parameters": _payload("park", step_id, task_token="$$.Task.Token"),
            "ResultPath": None,
            "Next": step_id,
        },
        f"{step_id}__failed": {
            "Type": "Task",
            "Resource": LAMBDA_INVOKE,
            "Parameters": _payload("fail", step_id, error="$.error"),
            "ResultPath": None,
            "Next": f"{step_id}__fail",
        },
        f"{step_id}__fail": {"Type": "Fail", "Error": "StepFailed"},
        f"{step_id}__cancelled": {"Type": "Fail", "Error": "WorkflowCancelled"},
    }


def chain_machine(steps: int) -> StateMachine:
    names = [f"s{i}" for i in range(steps)]
    states: dict[str, Any] = {}
    for position, name in enumerate(names):
        states.update(_step(name, names[position + 1] if position + 1 < steps else "Done"))
    states["Done"] = {"Type": "Succeed"}
    definition = {"StartAt": names[0], "States": states, "TimeoutSeconds": 3600, "Version": "1.0"}
    return load_state_machine(definition)


async def _no_latency(function_name: str, payload: dict[str, Any]) -> None:
    return None


async def measure(runs: int, steps: int = STEPS) -> list[float]:
    """Microseconds per step of each of ``runs`` sequential executions."""
    machine = chain_machine(steps)
    timers = SystemTimers()
    tokens = TaskTokenRegistry()
    rng = random.Random(0)
    samples = []
    for n in range(runs):
        started = time.perf_counter()
        result = await run_execution(
            machine,
            {"execution_id": f"exec-{n}"},
            execution_arn=f"arn:aws:states:local:0:execution:bench:exec-{n}",
            invoker=_no_latency,
            token_registry=tokens,
            timers=timers,
            rng=rng,
        )
        elapsed = time.perf_counter() - started
        if result.status is not ExecutionStatus.SUCCEEDED:
            raise RuntimeError(f"benchmark execution ended {result.status}: {result.error}")
        samples.append(elapsed / steps * 1e6)
    return samples


def main() -> None:
    async def bench() -> float:
        await measure(WARMUP_RUNS)
        return statistics.median(await measure(MEASURED_RUNS))

    print(f"interpreter_overhead_per_step_us_median={asyncio.run(bench()):.1f}")


if __name__ == "__main__":
    main()
