"""Compiler golden checks against ``docs/asl.md``.

The helpers (the subset checker, the walkers, the sample shapes) are in
``tests/compiler_support.py``, shared with the property tests and the moto integration test.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from llm_orchestrator.compiler import compile_workflow, to_json
from llm_orchestrator.workflows import WorkflowDefinition, parse_definition
from tests.compiler_support import (
    DEFAULT_PROVIDER_RETRY,
    LAMBDA_RETRY,
    RAG,
    RUNNER,
    SHAPES,
    assert_asl_subset,
    assert_respects_dependencies,
    compiled,
    definition,
    happens_before,
    iter_scopes,
    iter_states,
    parallel_depth,
    step,
    walk,
)

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
