"""Compile a workflow definition to Amazon States Language (see ``docs/asl.md``).

Pure and deterministic: the same definition and arguments always give the same dict,
and :func:`to_json` turns it into the same bytes, so a redeploy of an unchanged
workflow is a no-op and golden tests can compare text. Only JSONPath is used: neither
moto nor the local engine runs JSONata.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from llm_orchestrator.compiler.layout import Parallel, Plan, StepTask, group_items, plan_layout
from llm_orchestrator.workflows.models import (
    MAX_WORKFLOW_TIMEOUT_SECONDS,
    RetryPolicy,
    Step,
    WorkflowDefinition,
    parent_indexes,
)

__all__ = [
    "DONE_STATE",
    "LAMBDA_INVOKE",
    "LAMBDA_INVOKE_WAIT",
    "LAMBDA_SERVICE_ERRORS",
    "PROVIDER_RETRY_ERRORS",
    "VECTOR_STEP_TYPES",
    "cancelled_state",
    "compile_workflow",
    "fail_state",
    "failed_state",
    "paused_state",
    "to_json",
]

LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
LAMBDA_INVOKE_WAIT = "arn:aws:states:::lambda:invoke.waitForTaskToken"
DONE_STATE = "Done"

LAMBDA_SERVICE_ERRORS = (
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
)
"""AWS's recommended retrier for transient Lambda invoke failures."""
PROVIDER_RETRY_ERRORS = ("ProviderRateLimited", "ProviderUnavailable")
"""Class names of the provider errors worth waiting out (``providers/errors.py``)."""
VECTOR_STEP_TYPES = frozenset({"vector_upsert", "vector_search"})
"""Step types whose ``run`` Task invokes the vector runner: on AWS a separate Lambda with
the vector database SDKs, as one bundle with every SDK would not fit Lambda's size limit."""

WORKFLOW_PAUSED = "WorkflowPaused"
WORKFLOW_CANCELLED = "WorkflowCancelled"
STEP_FAILED = "StepFailed"
CATCH_ALL = "States.ALL"
ERROR_PATH = "$.error"

COMPACT_ABOVE_BYTES = 900_000
"""Above this size, top-level items are grouped ``GROUP_SIZE`` at a time.

Step Functions refuses definitions over 1 MB, and each top-level item's pause / failure
states cost over 1 KB, so a chain of several hundred steps would not fit. Smaller
workflows keep one set per item, which resumes a paused run exactly where it parked.
"""
GROUP_SIZE = 10
MIN_HANDLER_BYTES = 1_000
"""Lower bound of one top-level item's Catch plus helper states, in bytes."""
MIN_STEP_BYTES = 600
"""Lower bound of one step's Task state, in bytes."""

DEFAULT_RETRY = RetryPolicy()
MIN_MAX_DELAY_SECONDS = 60
"""Cap on one backoff wait (raised to the step's own interval if that is longer)."""


def paused_state(name: str) -> str:
    """The park state behind top-level state ``name`` (a step id or ``parallel__<n>``)."""
    return f"{name}__paused"


def failed_state(name: str) -> str:
    return f"{name}__failed"


def fail_state(name: str) -> str:
    return f"{name}__fail"


def cancelled_state(name: str) -> str:
    return f"{name}__cancelled"


def compile_workflow(
    definition: WorkflowDefinition,
    *,
    step_runner_arn: str,
    vector_runner_arn: str | None = None,
    timeout_seconds: int | None = None,
) -> dict[str, Any]:
    """The state machine for ``definition``; Task states invoke ``step_runner_arn``, except
    the ``run`` Tasks of vector steps, which invoke ``vector_runner_arn`` (by default the
    step runner too: locally one process runs every step).

    ``timeout_seconds`` (an execution's ``timeout_override``) replaces the workflow's own
    timeout. The definition must have passed ``parse_definition``. A machine that would
    exceed ``COMPACT_ABOVE_BYTES`` is rebuilt with its top-level items grouped.
    """
    if not step_runner_arn:
        raise ValueError("step_runner_arn must not be empty")
    functions = _Functions(step_runner_arn, vector_runner_arn or step_runner_arn)
    timeout = definition.timeout_seconds if timeout_seconds is None else timeout_seconds
    if not 1 <= timeout <= MAX_WORKFLOW_TIMEOUT_SECONDS:
        raise ValueError(f"timeout_seconds must be 1..{MAX_WORKFLOW_TIMEOUT_SECONDS}")
    plan = plan_layout(parent_indexes(definition))
    # Skip building the per-item machine when a lower bound of its size is already too big.
    floor = len(plan) * MIN_HANDLER_BYTES + len(definition.steps) * MIN_STEP_BYTES
    if floor <= COMPACT_ABOVE_BYTES:
        asl = _machine(definition, plan, functions, timeout)
        if len(to_json(asl).encode()) <= COMPACT_ABOVE_BYTES:
            return asl
    return _machine(definition, group_items(plan, GROUP_SIZE), functions, timeout)


class _Functions(NamedTuple):
    step_runner: str
    vector_runner: str


def _machine(
    definition: WorkflowDefinition, plan: Plan, functions: _Functions, timeout: int
) -> dict[str, Any]:
    emitter = _Emitter(definition.steps, functions)
    states: dict[str, Any] = {}
    start = emitter.chain(plan, states, DONE_STATE)
    states[DONE_STATE] = {"Type": "Succeed"}
    return {
        "Comment": f"{definition.name} {definition.version}",
        "StartAt": start,
        "States": states,
        "TimeoutSeconds": timeout,
        "Version": "1.0",
    }


def to_json(asl: dict[str, Any]) -> str:
    """Canonical text: sorted keys, no whitespace, so equal machines are equal bytes."""
    return json.dumps(asl, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class _Emitter:
    """Builds the states of a plan.

    Items of the top-level chain carry the pause / cancel / failure handling. Inside a
    Parallel, steps have only their Retry: any error they end with (``WorkflowPaused``
    included) fails the branch and so the whole Parallel, whose Catch handles it; on
    resume the Parallel runs again and the step runner returns the stored results of
    steps that already finished. Per-step handling inside branches would need the
    helper states per step in every branch and put a 1,000-step machine far over Step
    Functions' 1 MB definition quota.
    """

    def __init__(self, steps: list[Step], functions: _Functions) -> None:
        self._steps = steps
        self._functions = functions
        self._parallels = 0

    def chain(self, plan: Plan, states: dict[str, Any], after: str | None) -> str:
        """Add ``plan``'s states to ``states``, linked by ``Next``; return the first name.

        ``after`` is the state that follows the last item at the top level, or ``None``
        inside a branch, whose last item ends the branch.
        """
        names: list[str] = []
        for item in plan:
            step_id: str | None
            if isinstance(item, StepTask):
                step = self._steps[item.index]
                name, step_id, state = step.id, step.id, self._task(step)
            else:
                # Numbered before its branches are built: depth-first document order.
                self._parallels += 1
                name, step_id = f"parallel__{self._parallels}", None
                state = self._parallel(item)
            states[name] = state
            names.append(name)
            if after is not None:
                state["Catch"] = _handler_catches(name)
                states.update(self._handlers(name, step_id))
        for name, following in zip(names, [*names[1:], after], strict=True):
            states[name].update({"End": True} if following is None else {"Next": following})
        return names[0]

    def _task(self, step: Step) -> dict[str, Any]:
        task: dict[str, Any] = {
            "Type": "Task",
            "Resource": LAMBDA_INVOKE,
            "Parameters": self._parameters(
                "run",
                step.id,
                {"attempt.$": "$$.State.RetryCount"},
                function=self._functions.vector_runner
                if step.type in VECTOR_STEP_TYPES
                else self._functions.step_runner,
            ),
            "ResultPath": None,
        }
        if step.timeout_seconds is not None:
            task["TimeoutSeconds"] = step.timeout_seconds
        task["Retry"] = [_lambda_service_retry(), _provider_retry(step.retry or DEFAULT_RETRY)]
        return task

    def _parallel(self, item: Parallel) -> dict[str, Any]:
        branches = []
        for plan in item.branches:
            states: dict[str, Any] = {}
            start = self.chain(plan, states, None)
            branches.append({"StartAt": start, "States": states})
        return {"Type": "Parallel", "Branches": branches, "ResultPath": None}

    def _handlers(self, name: str, step_id: str | None) -> dict[str, Any]:
        """The park, failure-recording and terminal states behind one top-level state."""
        return {
            paused_state(name): {
                "Type": "Task",
                "Resource": LAMBDA_INVOKE_WAIT,
                "Parameters": self._parameters("park", step_id, {"task_token.$": "$$.Task.Token"}),
                "ResultPath": None,
                "Catch": [
                    _catch([WORKFLOW_CANCELLED], cancelled_state(name)),
                    _catch([CATCH_ALL], failed_state(name)),
                ],
                "Next": name,
            },
            failed_state(name): {
                "Type": "Task",
                "Resource": LAMBDA_INVOKE,
                "Parameters": self._parameters("fail", step_id, {"error.$": ERROR_PATH}),
                "ResultPath": None,
                "Next": fail_state(name),
            },
            fail_state(name): {"Type": "Fail", "Error": STEP_FAILED},
            cancelled_state(name): {"Type": "Fail", "Error": WORKFLOW_CANCELLED},
        }

    def _parameters(
        self, action: str, step_id: str | None, extra: dict[str, str], function: str | None = None
    ) -> dict[str, Any]:
        payload = {"action": action, "execution_id.$": "$.execution_id", "step_id": step_id}
        name = function or self._functions.step_runner
        return {"FunctionName": name, "Payload": {**payload, **extra}}


def _handler_catches(name: str) -> list[dict[str, Any]]:
    return [
        _catch([WORKFLOW_PAUSED], paused_state(name)),
        _catch([WORKFLOW_CANCELLED], cancelled_state(name)),
        _catch([CATCH_ALL], failed_state(name)),
    ]


def _lambda_service_retry() -> dict[str, Any]:
    return {
        "ErrorEquals": list(LAMBDA_SERVICE_ERRORS),
        "IntervalSeconds": 1,
        "MaxAttempts": 3,
        "BackoffRate": 2,
        "JitterStrategy": "FULL",
    }


def _catch(errors: list[str], target: str) -> dict[str, Any]:
    # Without a ResultPath a Catch replaces the state input with the error, and the
    # states after it would lose ``execution_id``.
    return {"ErrorEquals": errors, "Next": target, "ResultPath": ERROR_PATH}


def _provider_retry(policy: RetryPolicy) -> dict[str, Any]:
    rate = policy.backoff_rate
    return {
        "ErrorEquals": list(PROVIDER_RETRY_ERRORS),
        "IntervalSeconds": policy.backoff_seconds,
        # ASL counts retries; the definition counts attempts including the first.
        "MaxAttempts": policy.max_attempts - 1,
        "BackoffRate": int(rate) if rate.is_integer() else rate,
        "MaxDelaySeconds": max(MIN_MAX_DELAY_SECONDS, policy.backoff_seconds),
        "JitterStrategy": "FULL",
    }
