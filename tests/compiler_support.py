"""Building workflow definitions and reading the Amazon States Language compiled from
them: what the compiler's unit, property and moto tests share."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from llm_orchestrator.compiler import compile_workflow
from llm_orchestrator.workflows import WorkflowDefinition, parse_definition
from tests.samples import RAG_WORKFLOW

RUNNER = "arn:aws:lambda:us-east-1:123456789012:function:llmo-step-runner"

LAMBDA_RETRY = {
    "ErrorEquals": [
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
        "Lambda.TooManyRequestsException",
    ],
    "IntervalSeconds": 1,
    "MaxAttempts": 3,
    "BackoffRate": 2,
    "JitterStrategy": "FULL",
}
DEFAULT_PROVIDER_RETRY = {
    "ErrorEquals": ["ProviderRateLimited", "ProviderUnavailable"],
    "IntervalSeconds": 2,
    "MaxAttempts": 2,
    "BackoffRate": 2,
    "MaxDelaySeconds": 60,
    "JitterStrategy": "FULL",
}

_ALLOWED_FIELDS = {
    "Task": {"Type", "Resource", "Parameters", "ResultPath", "TimeoutSeconds", "Retry", "Catch"},
    "Parallel": {"Type", "Branches", "ResultPath", "Catch"},
    "Pass": {"Type"},
    "Succeed": {"Type"},
    "Fail": {"Type", "Error", "Cause"},
}
_RESOURCES = {
    "arn:aws:states:::lambda:invoke",
    "arn:aws:states:::lambda:invoke.waitForTaskToken",
}
_PAYLOAD_PATHS = {
    "$.execution_id",
    "$.error",
    "$$.Task.Token",
    "$$.State.RetryCount",
    "$$.Execution.Id",
}
_RETRY_FIELDS = {
    "ErrorEquals",
    "IntervalSeconds",
    "MaxAttempts",
    "BackoffRate",
    "MaxDelaySeconds",
    "JitterStrategy",
}


# --- shared helpers ------------------------------------------------------------------------


def step(step_id: str, *deps: str, **fields: Any) -> dict[str, Any]:
    base = {"id": step_id, "type": "embed", "provider": "openai", "model": "m", "input": "x"}
    return {**base, "depends_on": list(deps), **fields}


def definition(*steps: dict[str, Any], **fields: Any) -> WorkflowDefinition:
    return parse_definition({"name": "wf", "steps": list(steps), **fields})


def compiled(defn: WorkflowDefinition, **kwargs: Any) -> dict[str, Any]:
    return compile_workflow(defn, step_runner_arn=RUNNER, **kwargs)


def iter_scopes(asl: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every ``{StartAt, States}`` object: the machine itself and each branch, nested."""
    pending = [asl]
    while pending:
        scope = pending.pop()
        yield scope
        for state in scope["States"].values():
            pending.extend(state.get("Branches", []))


def iter_states(asl: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for scope in iter_scopes(asl):
        yield from scope["States"].items()


def assert_asl_subset(asl: dict[str, Any]) -> None:
    """Fail unless ``asl`` uses only what ``docs/asl.md`` allows, wired consistently."""
    assert set(asl) == {"Comment", "StartAt", "States", "TimeoutSeconds", "Version"}
    assert asl["Version"] == "1.0"
    names = [name for name, _ in iter_states(asl)]
    assert len(names) == len(set(names)), "state names must be unique machine-wide"
    assert all(len(name) <= 80 for name in names)
    for scope in iter_scopes(asl):
        states = scope["States"]
        assert scope["StartAt"] in states
        for name, state in states.items():
            kind = state["Type"]
            terminal = kind in ("Succeed", "Fail")
            transition = {"End", "Next"} & set(state)
            assert set(state) - transition <= _ALLOWED_FIELDS[kind], name
            assert len(transition) == (0 if terminal else 1), name
            if "Next" in state:
                assert state["Next"] in states, f"{name} jumps out of its scope"
            if "End" in state:
                assert state["End"] is True
            if kind in ("Task", "Parallel"):
                assert "ResultPath" in state and state["ResultPath"] is None, name
            if kind == "Task":
                _assert_task(name, state, states)
            for catch in state.get("Catch", []):
                assert set(catch) == {"ErrorEquals", "Next", "ResultPath"}
                assert catch["ResultPath"] == "$.error"
                assert catch["Next"] in states
            errors = [e for c in state.get("Catch", []) for e in c["ErrorEquals"]]
            assert "States.ALL" not in errors[:-1], "States.ALL must come last"


def _assert_task(name: str, state: dict[str, Any], states: dict[str, Any]) -> None:
    assert state["Resource"] in _RESOURCES
    assert set(state["Parameters"]) == {"FunctionName", "Payload"}
    assert state["Parameters"]["FunctionName"] == RUNNER
    for key, value in state["Parameters"]["Payload"].items():
        if key.endswith(".$"):
            assert value in _PAYLOAD_PATHS, (name, key)
        else:
            assert not isinstance(value, dict | list), (name, key)
    for retry in state.get("Retry", []):
        assert set(retry) <= _RETRY_FIELDS
        assert retry.get("JitterStrategy", "FULL") in ("FULL", "NONE")


def walk(asl: dict[str, Any], *, reverse_branches: bool = False) -> list[str]:
    """Step ids in the order a run that never fails or pauses calls them.

    Follows ``Next`` from ``StartAt``, runs Parallel branches one after another (in
    reverse when asked), never takes a Catch, and fails on a loop or a Fail state.
    """
    calls: list[str] = []

    def run(scope: dict[str, Any]) -> None:
        name: str | None = scope["StartAt"]
        seen: set[str] = set()
        while name is not None:
            assert name not in seen, f"loop through {name}"
            seen.add(name)
            state = scope["States"][name]
            kind = state["Type"]
            assert kind != "Fail", f"happy path reached Fail state {name}"
            if kind == "Task":
                payload = state["Parameters"]["Payload"]
                assert payload["action"] == "run"
                calls.append(payload["step_id"])
            elif kind == "Parallel":
                branches = state["Branches"]
                for branch in reversed(branches) if reverse_branches else branches:
                    run(branch)
            if kind == "Succeed" or state.get("End"):
                return
            name = state["Next"]

    run(asl)
    return calls


def happens_before(asl: dict[str, Any]) -> set[tuple[str, str]]:
    """Pairs ``(x, y)`` such that the machine always finishes step ``x`` before starting ``y``."""
    pairs: set[tuple[str, str]] = set()

    def chain(scope: dict[str, Any]) -> set[str]:
        items: list[set[str]] = []
        name: str | None = scope["StartAt"]
        while name is not None:
            state = scope["States"][name]
            if state["Type"] == "Task":
                items.append({state["Parameters"]["Payload"]["step_id"]})
            elif state["Type"] == "Parallel":
                items.append(set().union(*(chain(branch) for branch in state["Branches"])))
            name = None if state["Type"] == "Succeed" or state.get("End") else state["Next"]
        for position, earlier in enumerate(items):
            for later in items[position + 1 :]:
                pairs.update((x, y) for x in earlier for y in later)
        return set().union(*items)

    chain(asl)
    return pairs


def parallel_depth(scope: dict[str, Any]) -> int:
    return max(
        (
            1 + max(parallel_depth(branch) for branch in state["Branches"])
            for state in scope["States"].values()
            if state["Type"] == "Parallel"
        ),
        default=0,
    )


def assert_respects_dependencies(defn: WorkflowDefinition, calls: list[str]) -> None:
    assert sorted(calls) == sorted(s.id for s in defn.steps), "every step exactly once"
    position = {step_id: index for index, step_id in enumerate(calls)}
    for item in defn.steps:
        for dep in item.depends_on:
            assert position[dep] < position[item.id], f"{item.id} ran before {dep}"


# --- shapes used by several tests ----------------------------------------------------------

RAG = parse_definition(RAG_WORKFLOW)

SHAPES: dict[str, WorkflowDefinition] = {
    "single": definition(step("only")),
    "chain": definition(step("a"), step("b", "a"), step("c", "b")),
    "diamond": definition(step("a"), step("b", "a"), step("c", "a"), step("d", "b", "c")),
    "wide": definition(step("root"), *(step(f"w{i}", "root") for i in range(12))),
    "two_chains": definition(step("a"), step("b", "a"), step("c"), step("d", "c")),
    "n_shape": definition(step("a"), step("b"), step("c", "a", "b"), step("d", "b")),
    "rag": RAG,
}
