"""load_state_machine accepts the compiled shape of docs/asl.md and refuses everything else.

Each refusal names the path of the offending field, so a compiler bug points at itself.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from llm_orchestrator.engine.asl import (
    LAMBDA_INVOKE,
    LAMBDA_INVOKE_WAIT_FOR_TASK_TOKEN,
    UnsupportedDefinition,
    load_state_machine,
)
from llm_orchestrator.engine.asl.model import ParallelState, TaskState

RUNNER = "arn:aws:lambda:us-east-1:123456789012:function:llmo-step-runner"


def _catch(errors: list[str], target: str) -> dict[str, Any]:
    return {"ErrorEquals": errors, "Next": target, "ResultPath": "$.error"}


def _step(step_id: str, transition: dict[str, Any]) -> dict[str, Any]:
    def payload(action: str, **paths: str) -> dict[str, Any]:
        fields = {"action": action, "execution_id.$": "$.execution_id", "step_id": step_id}
        return {"FunctionName": RUNNER, "Payload": fields | {f"{k}.$": v for k, v in paths.items()}}

    return {
        step_id: {
            "Type": "Task",
            "Resource": LAMBDA_INVOKE,
            "Parameters": payload("run", attempt="$$.State.RetryCount"),
            "ResultPath": None,
            "TimeoutSeconds": 900,
            "Retry": [
                {
                    "ErrorEquals": ["Lambda.ServiceException", "Lambda.TooManyRequestsException"],
                    "IntervalSeconds": 1,
                    "MaxAttempts": 3,
                    "BackoffRate": 2,
                    "JitterStrategy": "FULL",
                },
                {
                    "ErrorEquals": ["ProviderRateLimited", "ProviderUnavailable"],
                    "IntervalSeconds": 2,
                    "MaxAttempts": 4,
                    "BackoffRate": 2.5,
                    "MaxDelaySeconds": 60,
                    "JitterStrategy": "FULL",
                },
            ],
            "Catch": [
                _catch(["WorkflowPaused"], f"{step_id}__paused"),
                _catch(["WorkflowCancelled"], f"{step_id}__cancelled"),
                _catch(["States.ALL"], f"{step_id}__failed"),
            ],
            **transition,
        },
        f"{step_id}__paused": {
            "Type": "Task",
            "Resource": LAMBDA_INVOKE_WAIT_FOR_TASK_TOKEN,
            "Parameters": payload("park", task_token="$$.Task.Token"),
            "ResultPath": None,
            "Catch": [
                _catch(["WorkflowCancelled"], f"{step_id}__cancelled"),
                _catch(["States.ALL"], f"{step_id}__failed"),
            ],
            "Next": step_id,
        },
        f"{step_id}__failed": {
            "Type": "Task",
            "Resource": LAMBDA_INVOKE,
            "Parameters": payload("fail", error="$.error"),
            "ResultPath": None,
            "Next": f"{step_id}__fail",
        },
        f"{step_id}__fail": {"Type": "Fail", "Error": "StepFailed"},
        f"{step_id}__cancelled": {"Type": "Fail", "Error": "WorkflowCancelled"},
    }


def compiled() -> dict[str, Any]:
    """Step ``a``, then a Parallel of ``b`` and ``c``, then Done."""
    return {
        "Comment": "golden 1",
        "StartAt": "a",
        "States": {
            **_step("a", {"Next": "parallel__1"}),
            "parallel__1": {
                "Type": "Parallel",
                "Branches": [
                    {"StartAt": "b", "States": _step("b", {"End": True})},
                    {"StartAt": "c", "States": _step("c", {"End": True})},
                ],
                "ResultPath": None,
                "Next": "Done",
            },
            "Done": {"Type": "Succeed"},
        },
        "TimeoutSeconds": 3600,
        "Version": "1.0",
    }


def test_the_compiled_shape_loads() -> None:
    machine = load_state_machine(compiled())

    assert machine.timeout_seconds == 3600
    assert machine.root.start_at == "a"
    task = machine.root.states["a"]
    assert isinstance(task, TaskState) and task.timeout_seconds == 900
    assert [r.max_attempts for r in task.retry] == [3, 4]
    parallel = machine.root.states["parallel__1"]
    assert isinstance(parallel, ParallelState)
    assert [branch.start_at for branch in parallel.branches] == ["b", "c"]


def test_json_text_loads_like_the_dict() -> None:
    assert load_state_machine(json.dumps(compiled())) == load_state_machine(compiled())


def test_a_small_hand_written_machine_loads() -> None:
    machine = load_state_machine(
        {
            "StartAt": "p",
            "QueryLanguage": "JSONPath",
            "States": {"p": {"Type": "Pass", "Comment": "noop", "End": True}},
        }
    )

    assert machine.timeout_seconds is None


Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    """Set the value at a /-separated path (list indexes are numbers)."""

    def mutate(definition: dict[str, Any]) -> None:
        *parents, last = path.strip("/").split("/")
        node: Any = definition
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def _delete(path: str) -> Mutation:
    def mutate(definition: dict[str, Any]) -> None:
        *parents, last = path.strip("/").split("/")
        node: Any = definition
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[last]

    return mutate


def _add_state(name: str, state: dict[str, Any]) -> Mutation:
    return _set(f"/States/{name}", state)


def _reroute_to(name: str, state: dict[str, Any]) -> Mutation:
    """Put ``state`` between ``a`` and its successor, so that it is reachable."""

    def mutate(definition: dict[str, Any]) -> None:
        definition["States"][name] = {**state, "Next": "parallel__1"}
        definition["States"]["a"]["Next"] = name

    return mutate


BRANCH_B = "/States/parallel__1/Branches/0/States/b"
PAYLOAD = "/States/a/Parameters/Payload"

REFUSALS: list[tuple[str, Mutation, str]] = [
    ("Map state", _reroute_to("m", {"Type": "Map", "ItemsPath": "$.x"}), "/States/m/Type"),
    ("Wait state", _reroute_to("w", {"Type": "Wait", "Seconds": 1}), "/States/w/Type"),
    (
        "Choice state",
        _add_state("ch", {"Type": "Choice", "Choices": [], "Default": "Done"}),
        "/States/ch/Type",
    ),
    ("unknown field on a Task", _set("/States/a/InputPath", "$"), "/States/a/InputPath"),
    ("heartbeat", _set("/States/a/HeartbeatSeconds", 60), "/States/a/HeartbeatSeconds"),
    ("Task ResultPath", _set("/States/a/ResultPath", "$.result"), "/States/a/ResultPath"),
    ("Task without ResultPath", _delete("/States/a/ResultPath"), "/States/a/ResultPath"),
    (
        "Parallel ResultPath",
        _set("/States/parallel__1/ResultPath", "$"),
        "/States/parallel__1/ResultPath",
    ),
    (
        "Retry on a Parallel",
        _set("/States/parallel__1/Retry", [{"ErrorEquals": ["States.ALL"]}]),
        "/States/parallel__1/Retry",
    ),
    (
        "Catch ResultPath",
        _set("/States/a/Catch/0/ResultPath", "$.err"),
        "/States/a/Catch/0/ResultPath",
    ),
    (
        "Catch without ResultPath",
        _delete("/States/a/Catch/1/ResultPath"),
        "/States/a/Catch/1/ResultPath",
    ),
    ("array path", _set(f"{PAYLOAD}/attempt.$", "$.items[0]"), f"{PAYLOAD}/attempt.$"),
    (
        "intrinsic function",
        _set(f"{PAYLOAD}/attempt.$", "States.Format('{}', $.x)"),
        f"{PAYLOAD}/attempt.$",
    ),
    ("other context path", _set(f"{PAYLOAD}/x.$", "$$.Execution.Input"), f"{PAYLOAD}/x.$"),
    ("recursive descent", _set(f"{PAYLOAD}/x.$", "$..id"), f"{PAYLOAD}/x.$"),
    ("non-string path", _set(f"{PAYLOAD}/x.$", 3), f"{PAYLOAD}/x.$"),
    ("path and value for one key", _set(f"{PAYLOAD}/attempt", 1), f"{PAYLOAD}/attempt.$"),
    ("path inside an array", _set(f"{PAYLOAD}/list", [{"id.$": "$.x"}]), f"{PAYLOAD}/list/0/id.$"),
    (
        "task token in a plain invoke",
        _set(f"{PAYLOAD}/token.$", "$$.Task.Token"),
        f"{PAYLOAD}/token.$",
    ),
    (
        "waitForTaskToken without the token",
        _delete("/States/a__paused/Parameters/Payload/task_token.$"),
        "/States/a__paused/Parameters/Payload",
    ),
    (
        "legacy Lambda ARN resource",
        _set("/States/a/Resource", "arn:aws:lambda:us-east-1:123456789012:function:f"),
        "/States/a/Resource",
    ),
    (
        "synchronous job resource",
        _set("/States/a/Resource", "arn:aws:states:::states:startExecution.sync"),
        "/States/a/Resource",
    ),
    (
        "dynamic function name",
        _set("/States/a/Parameters/FunctionName.$", "$.fn"),
        "/States/a/Parameters/FunctionName.$",
    ),
    ("missing Payload", _delete(f"{PAYLOAD}"), "/States/a/Parameters"),
    ("Next to nowhere", _set("/States/a/Next", "nowhere"), "/States/a/Next"),
    (
        "Catch Next to nowhere",
        _set("/States/a/Catch/0/Next", "nowhere"),
        "/States/a/Catch/0/Next",
    ),
    (
        "Next out of a branch",
        _set(f"{BRANCH_B}__fail", {"Type": "Pass", "Next": "Done"}),
        f"{BRANCH_B}__fail/Next",
    ),
    ("StartAt to nowhere", _set("/StartAt", "nowhere"), "/StartAt"),
    (
        "States.ALL not last",
        _set("/States/a/Catch", [_catch(["States.ALL"], "a__failed")] * 2),
        "/States/a/Catch/0/ErrorEquals",
    ),
    (
        "States.ALL beside other names",
        _set("/States/a/Catch/2/ErrorEquals", ["States.ALL", "Oops"]),
        "/States/a/Catch/2/ErrorEquals",
    ),
    (
        "States.ALL in a retrier that is not last",
        _set("/States/a/Retry/0/ErrorEquals", ["States.ALL"]),
        "/States/a/Retry/0/ErrorEquals",
    ),
    ("JSONata machine", _set("/QueryLanguage", "JSONata"), "/QueryLanguage"),
    ("JSONata state", _set("/States/a/QueryLanguage", "JSONata"), "/States/a/QueryLanguage"),
    ("other Version", _set("/Version", "2.0"), "/Version"),
    ("zero timeout", _set("/TimeoutSeconds", 0), "/TimeoutSeconds"),
    ("boolean timeout", _set("/States/a/TimeoutSeconds", True), "/States/a/TimeoutSeconds"),
    ("timeout path", _set("/States/a/TimeoutSecondsPath", "$.t"), "/States/a/TimeoutSecondsPath"),
    (
        "backoff below one",
        _set("/States/a/Retry/1/BackoffRate", 0.5),
        "/States/a/Retry/1/BackoffRate",
    ),
    (
        "unknown jitter",
        _set("/States/a/Retry/1/JitterStrategy", "PARTIAL"),
        "/States/a/Retry/1/JitterStrategy",
    ),
    (
        "negative attempts",
        _set("/States/a/Retry/1/MaxAttempts", -1),
        "/States/a/Retry/1/MaxAttempts",
    ),
    (
        "zero interval",
        _set("/States/a/Retry/1/IntervalSeconds", 0),
        "/States/a/Retry/1/IntervalSeconds",
    ),
    ("unknown retrier field", _set("/States/a/Retry/0/Foo", 1), "/States/a/Retry/0/Foo"),
    ("unreachable state", _add_state("orphan", {"Type": "Succeed"}), "/States/orphan"),
    (
        "state name used twice",
        _add_state("b", {"Type": "Succeed"}),
        "/States/b",
    ),
    ("Next and End", _set("/States/a/End", True), "/States/a"),
    ("neither Next nor End", _delete("/States/a/Next"), "/States/a"),
    ("End false", _set("/States/Done", {"Type": "Pass", "End": False}), "/States/Done/End"),
    (
        "Pass with Result",
        _set("/States/Done", {"Type": "Pass", "Result": 1, "End": True}),
        "/States/Done/Result",
    ),
    (
        "Pass with Parameters",
        _set("/States/Done", {"Type": "Pass", "Parameters": {}, "End": True}),
        "/States/Done/Parameters",
    ),
    ("Succeed with Next", _set("/States/Done/Next", "a"), "/States/Done/Next"),
    ("Fail with ErrorPath", _set("/States/a__fail/ErrorPath", "$.e"), "/States/a__fail/ErrorPath"),
    ("Fail with a non-string Error", _set("/States/a__fail/Error", 1), "/States/a__fail/Error"),
    ("unknown top-level field", _set("/Assign", {}), "/Assign"),
    ("empty Branches", _set("/States/parallel__1/Branches", []), "/States/parallel__1/Branches"),
    (
        "branch field",
        _set("/States/parallel__1/Branches/0/ProcessorConfig", {}),
        "/States/parallel__1/Branches/0/ProcessorConfig",
    ),
    ("branch Map", _set(f"{BRANCH_B}/Type", "Map"), f"{BRANCH_B}/Type"),
]


@pytest.mark.parametrize(
    ("mutate", "path"),
    [pytest.param(mutate, path, id=name) for name, mutate, path in REFUSALS],
)
def test_unsupported_constructs_are_refused_on_load_naming_their_path(
    mutate: Mutation, path: str
) -> None:
    definition = copy.deepcopy(compiled())
    mutate(definition)

    with pytest.raises(UnsupportedDefinition) as refused:
        load_state_machine(definition)

    assert refused.value.path == path
    assert path in str(refused.value)


def test_a_machine_without_any_way_to_end_is_refused() -> None:
    definition = {
        "StartAt": "one",
        "States": {"one": {"Type": "Pass", "Next": "two"}, "two": {"Type": "Pass", "Next": "one"}},
    }

    with pytest.raises(UnsupportedDefinition, match="no state ends") as refused:
        load_state_machine(definition)

    assert refused.value.path == "/States"


@pytest.mark.parametrize("text", ["{not json", "[]", '"a string"'])
def test_text_that_is_not_a_json_object_is_refused(text: str) -> None:
    with pytest.raises(UnsupportedDefinition):
        load_state_machine(text)


def test_refusal_is_a_value_error() -> None:
    assert issubclass(UnsupportedDefinition, ValueError)
