"""Compiler golden checks against ``docs/asl.md``.

The helpers at the top (the subset checker and the walkers) are shared with the property
tests and the moto integration test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from llm_orchestrator.compiler import compile_workflow, to_json
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


# --- golden --------------------------------------------------------------------------------


def _handlers(name: str, step_id: str | None) -> dict[str, Any]:
    base = {"execution_id.$": "$.execution_id", "step_id": step_id}
    catch = {"ResultPath": "$.error"}
    return {
        f"{name}__paused": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
            "Parameters": {
                "FunctionName": RUNNER,
                "Payload": {"action": "park", **base, "task_token.$": "$$.Task.Token"},
            },
            "ResultPath": None,
            "Catch": [
                {"ErrorEquals": ["WorkflowCancelled"], "Next": f"{name}__cancelled", **catch},
                {"ErrorEquals": ["States.ALL"], "Next": f"{name}__failed", **catch},
            ],
            "Next": name,
        },
        f"{name}__failed": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {
                "FunctionName": RUNNER,
                "Payload": {"action": "fail", **base, "error.$": "$.error"},
            },
            "ResultPath": None,
            "Next": f"{name}__fail",
        },
        f"{name}__fail": {"Type": "Fail", "Error": "StepFailed"},
        f"{name}__cancelled": {"Type": "Fail", "Error": "WorkflowCancelled"},
    }


def _catches(name: str) -> list[dict[str, Any]]:
    return [
        {"ErrorEquals": ["WorkflowPaused"], "Next": f"{name}__paused", "ResultPath": "$.error"},
        {
            "ErrorEquals": ["WorkflowCancelled"],
            "Next": f"{name}__cancelled",
            "ResultPath": "$.error",
        },
        {"ErrorEquals": ["States.ALL"], "Next": f"{name}__failed", "ResultPath": "$.error"},
    ]


def _run_task(step_id: str) -> dict[str, Any]:
    return {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {
            "FunctionName": RUNNER,
            "Payload": {
                "action": "run",
                "execution_id.$": "$.execution_id",
                "step_id": step_id,
                "attempt.$": "$$.State.RetryCount",
            },
        },
        "ResultPath": None,
        "Retry": [LAMBDA_RETRY, DEFAULT_PROVIDER_RETRY],
    }


def test_a_single_step_compiles_to_the_documented_shape() -> None:
    asl = compiled(definition(step("analyze"), timeout_seconds=300))

    assert asl == {
        "Comment": "wf 1.0",
        "StartAt": "analyze",
        "States": {
            "analyze": {**_run_task("analyze"), "Catch": _catches("analyze"), "Next": "Done"},
            **_handlers("analyze", "analyze"),
            "Done": {"Type": "Succeed"},
        },
        "TimeoutSeconds": 300,
        "Version": "1.0",
    }


def test_a_diamond_runs_its_middle_level_as_one_parallel() -> None:
    asl = compiled(SHAPES["diamond"])

    assert asl["StartAt"] == "a"
    assert asl["States"]["a"]["Next"] == "parallel__1"
    parallel = asl["States"]["parallel__1"]
    assert parallel == {
        "Type": "Parallel",
        "Branches": [
            {"StartAt": "b", "States": {"b": {**_run_task("b"), "End": True}}},
            {"StartAt": "c", "States": {"c": {**_run_task("c"), "End": True}}},
        ],
        "ResultPath": None,
        "Catch": _catches("parallel__1"),
        "Next": "d",
    }
    assert {k: v for k, v in asl["States"].items() if k.startswith("parallel__1__")} == (
        _handlers("parallel__1", None)
    )
    assert asl["States"]["d"]["Next"] == "Done"


# --- invariants over every shape -----------------------------------------------------------


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_shape_stays_inside_the_documented_subset(shape: str) -> None:
    assert_asl_subset(compiled(SHAPES[shape]))


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_task_and_parallel_discards_its_result(shape: str) -> None:
    states = [s for _, s in iter_states(compiled(SHAPES[shape])) if s["Type"] != "Fail"]

    assert all(s["ResultPath"] is None for s in states if s["Type"] in ("Task", "Parallel"))


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_step_task_retries_and_every_top_level_item_catches(shape: str) -> None:
    asl = compiled(SHAPES[shape])

    for _, state in iter_states(asl):
        if state["Type"] == "Task" and state["Parameters"]["Payload"]["action"] == "run":
            assert state["Retry"] == [LAMBDA_RETRY, DEFAULT_PROVIDER_RETRY]
    for name, state in asl["States"].items():
        if (
            state["Type"] == "Parallel"
            or state.get("Parameters", {}).get("Payload", {}).get("action") == "run"
        ):
            assert state["Catch"] == _catches(name)
    for scope in iter_scopes(asl):
        if scope is not asl:
            assert all("Catch" not in s for s in scope["States"].values())


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_happy_run_calls_each_step_once_after_its_dependencies(shape: str) -> None:
    asl = compiled(SHAPES[shape])

    for reverse in (False, True):
        assert_respects_dependencies(SHAPES[shape], walk(asl, reverse_branches=reverse))


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_compiling_is_deterministic_to_the_byte(shape: str) -> None:
    again = parse_definition(json.loads(SHAPES[shape].model_dump_json()))

    first, second = to_json(compiled(SHAPES[shape])), to_json(compiled(again))

    assert first == second
    assert first == json.dumps(json.loads(first), sort_keys=True, separators=(",", ":"))


# --- layout --------------------------------------------------------------------------------


def test_a_chain_is_linked_tasks_ending_in_done() -> None:
    asl = compiled(SHAPES["chain"])

    assert asl["StartAt"] == "a"
    assert [asl["States"][n]["Next"] for n in ("a", "b", "c")] == ["b", "c", "Done"]
    assert asl["States"]["Done"] == {"Type": "Succeed"}
    assert not any(s["Type"] == "Parallel" for _, s in iter_states(asl))


def test_independent_chains_run_side_by_side_not_in_lockstep() -> None:
    asl = compiled(SHAPES["two_chains"])

    assert asl["StartAt"] == "parallel__1"
    branches = asl["States"]["parallel__1"]["Branches"]
    assert [(b["StartAt"], b["States"][b["StartAt"]]["Next"]) for b in branches] == [
        ("a", "b"),
        ("c", "d"),
    ]
    assert happens_before(asl) == {("a", "b"), ("c", "d")}


def test_a_graph_that_is_not_series_parallel_runs_level_by_level() -> None:
    asl = compiled(SHAPES["n_shape"])

    first, second = asl["States"]["parallel__1"], asl["States"]["parallel__2"]
    assert [b["StartAt"] for b in first["Branches"]] == ["a", "b"]
    assert first["Next"] == "parallel__2"
    assert [b["StartAt"] for b in second["Branches"]] == ["c", "d"]


def test_branches_follow_definition_order() -> None:
    asl = compiled(
        definition(step("root"), step("z", "root"), step("m", "root"), step("a", "root"))
    )

    assert [b["StartAt"] for b in asl["States"]["parallel__1"]["Branches"]] == ["z", "m", "a"]


def test_definition_order_does_not_change_the_execution_order_constraints() -> None:
    asl = compiled(definition(step("c", "b"), step("b", "a"), step("a")))

    assert walk(asl) == ["a", "b", "c"]


def test_the_rag_workflow_is_a_chain_of_three_tasks() -> None:
    assert walk(compiled(RAG)) == ["embed_query", "search_docs", "generate_answer"]


def test_deep_nesting_is_capped_and_still_ordered() -> None:
    # Each round adds a step in parallel with everything so far and one after it, so the
    # exact layout would nest one Parallel deeper per round.
    steps = [step("s0")]
    tail = "s0"
    for round_ in range(1, 20):
        side, after = f"p{round_}", f"s{round_}"
        steps.append(step(side))
        steps.append(step(after, tail, side))
        tail = after
    defn = definition(*steps)

    asl = compiled(defn)

    assert parallel_depth(asl) <= 9
    assert_asl_subset(asl)
    for reverse in (False, True):
        assert_respects_dependencies(defn, walk(asl, reverse_branches=reverse))


# --- retries, timeouts, arguments ----------------------------------------------------------


def test_step_retry_settings_shape_the_provider_retrier() -> None:
    defn = definition(
        step("a", retry={"max_attempts": 5, "backoff_seconds": 10, "backoff_rate": 1.5}),
        step("b", "a", retry={"max_attempts": 1, "backoff_seconds": 120}),
    )

    states = compiled(defn)["States"]

    assert states["a"]["Retry"] == [
        LAMBDA_RETRY,
        {
            **DEFAULT_PROVIDER_RETRY,
            "IntervalSeconds": 10,
            "MaxAttempts": 4,
            "BackoffRate": 1.5,
        },
    ]
    assert states["b"]["Retry"][1] == {
        **DEFAULT_PROVIDER_RETRY,
        "IntervalSeconds": 120,
        "MaxAttempts": 0,
        "MaxDelaySeconds": 120,
    }


def test_a_step_timeout_becomes_the_task_timeout() -> None:
    states = compiled(definition(step("a", timeout_seconds=45), step("b", "a")))["States"]

    assert states["a"]["TimeoutSeconds"] == 45
    assert "TimeoutSeconds" not in states["b"]


def test_the_machine_timeout_comes_from_the_workflow_or_the_override() -> None:
    defn = definition(step("a"), timeout_seconds=900)

    assert compiled(defn)["TimeoutSeconds"] == 900
    assert compiled(defn, timeout_seconds=60)["TimeoutSeconds"] == 60
    assert compiled(definition(step("a")))["TimeoutSeconds"] == 3600


@pytest.mark.parametrize("timeout", [0, -5, 31_536_001])
def test_an_out_of_range_override_is_refused(timeout: int) -> None:
    with pytest.raises(ValueError, match="timeout_seconds"):
        compiled(definition(step("a")), timeout_seconds=timeout)


def test_an_empty_step_runner_is_refused() -> None:
    with pytest.raises(ValueError, match="step_runner_arn"):
        compile_workflow(definition(step("a")), step_runner_arn="")


def test_the_comment_names_the_workflow_and_version() -> None:
    asl = compiled(definition(step("a"), version="2.1"))

    assert asl["Comment"] == "wf 2.1"


# --- size ----------------------------------------------------------------------------------


def _chain(size: int) -> WorkflowDefinition:
    return definition(
        *(step(f"step-{i:04d}", *([f"step-{i - 1:04d}"] if i else [])) for i in range(size))
    )


def test_a_long_chain_shares_handlers_between_groups_of_ten_to_fit_the_quota() -> None:
    defn = _chain(1000)

    asl = compiled(defn)

    assert len(to_json(asl).encode()) < 1024 * 1024
    top = [asl["States"][name] for name in _top_level_names(asl)]
    assert len(top) == 100
    assert all(
        state["Type"] == "Parallel" and len(state["Branches"]) == 1 and "Catch" in state
        for state in top
    )
    assert [len(b["States"]) for b in top[0]["Branches"]] == [10]
    assert_asl_subset(asl)
    assert walk(asl) == [s.id for s in defn.steps]


def test_a_chain_that_fits_keeps_per_step_handlers() -> None:
    asl = compiled(_chain(100))

    assert _top_level_names(asl) == [f"step-{i:04d}" for i in range(100)]
    assert "step-0042__paused" in asl["States"]


def _top_level_names(asl: dict[str, Any]) -> list[str]:
    names = []
    name = asl["StartAt"]
    while name != "Done":
        names.append(name)
        name = asl["States"][name]["Next"]
    return names


def test_parallels_are_numbered_depth_first_in_document_order() -> None:
    asl = compiled(
        definition(
            step("a"),
            step("b", "a"),
            step("c", "a"),
            step("d", "b", "c"),
            step("e"),
            step("f", "d", "e"),
            step("g", "f"),
            step("h", "f"),
        )
    )

    assert _top_level_names(asl) == ["parallel__1", "f", "parallel__3"]
    outer_first_branch = asl["States"]["parallel__1"]["Branches"][0]["States"]
    assert outer_first_branch["a"]["Next"] == "parallel__2"


VECTOR_RUNNER = "arn:aws:lambda:us-east-1:123456789012:function:llmo-vector-runner"


def test_vector_steps_run_on_the_vector_runner_and_everything_else_on_the_step_runner() -> None:
    search = {"type": "vector_search", "database": "pgvector", "index": "kb", "query": "{{q}}"}
    upsert = {"type": "vector_upsert", "database": "pgvector", "index": "kb"}
    upsert |= {"vectors": "{{v}}", "documents": "{{d}}"}
    defn = definition(
        step("embed"),
        {"id": "store", "depends_on": ["embed"], **upsert},
        {"id": "find", "depends_on": ["store"], **search},
        {"id": "answer", "type": "llm", "provider": "anthropic", "model": "m"}
        | {"prompt": "{{find}}", "depends_on": ["find"]},
    )

    asl = compile_workflow(defn, step_runner_arn=RUNNER, vector_runner_arn=VECTOR_RUNNER)

    functions = {
        name: state["Parameters"]["FunctionName"]
        for name, state in iter_states(asl)
        if state["Type"] == "Task"
    }
    assert {name for name, f in functions.items() if f == VECTOR_RUNNER} == {"store", "find"}
    # Parking and recording a failure need no SDK: the step runner does both, for every step.
    assert functions["store__paused"] == functions["find__failed"] == RUNNER
    assert functions["embed"] == functions["answer"] == RUNNER
    # Without a vector runner (one local process), every Task invokes the step runner.
    alone = compile_workflow(defn, step_runner_arn=RUNNER)
    invoked = {s["Parameters"]["FunctionName"] for _, s in iter_states(alone) if "Parameters" in s}
    assert invoked == {RUNNER}
