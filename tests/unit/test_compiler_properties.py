"""Property tests over random DAGs: the compiled machine is valid, stable and correct."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_orchestrator.compiler import to_json
from llm_orchestrator.errors import ValidationFailed
from llm_orchestrator.workflows import WorkflowDefinition, ancestors, parse_definition
from tests.compiler_support import (
    DEFAULT_PROVIDER_RETRY,
    LAMBDA_RETRY,
    assert_asl_subset,
    assert_respects_dependencies,
    compiled,
    definition,
    happens_before,
    iter_scopes,
    iter_states,
    step,
    walk,
)

PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@st.composite
def dags(draw: st.DrawFn, max_steps: int = 30) -> WorkflowDefinition:
    """A random DAG, listed in a random order (definition order is not topological)."""
    size = draw(st.integers(1, max_steps))
    parents = [
        sorted(draw(st.sets(st.integers(0, node - 1), max_size=4))) if node else []
        for node in range(size)
    ]
    order = draw(st.permutations(range(size)))
    return definition(*(step(f"s{n}", *(f"s{p}" for p in parents[n])) for n in order))


Tree = Any  # "leaf" | ("S" | "P", [Tree, ...])

sp_trees = st.recursive(
    st.just("leaf"),
    lambda children: st.tuples(st.sampled_from(["S", "P"]), st.lists(children, min_size=2)),
    max_leaves=16,
)


def sp_definition(tree: Tree) -> WorkflowDefinition:
    """The series-parallel DAG a composition tree describes.

    In a series, every first step of a part depends on every last step of the part before.
    """
    steps: list[dict[str, Any]] = []

    def build(node: Tree, after: list[str]) -> tuple[list[str], list[str]]:
        if node == "leaf":
            name = f"s{len(steps)}"
            steps.append(step(name, *after))
            return [name], [name]
        kind, parts = node
        if kind == "P":
            built = [build(part, after) for part in parts]
            return [s for first, _ in built for s in first], [s for _, last in built for s in last]
        firsts, lasts = build(parts[0], after)
        for part in parts[1:]:
            _, lasts = build(part, lasts)
        return firsts, lasts

    build(tree, [])
    return definition(*steps)


def edge(size: int) -> st.SearchStrategy[tuple[int, int]]:
    return st.tuples(st.integers(0, size - 1), st.integers(0, size - 1)).filter(
        lambda pair: pair[0] != pair[1]
    )


def ancestor_pairs(defn: WorkflowDefinition) -> set[tuple[str, str]]:
    return {(before, after) for after, found in ancestors(defn).items() for before in found}


@PROPERTY_SETTINGS
@given(dags())
def test_compiled_machine_is_valid_deterministic_json(defn: WorkflowDefinition) -> None:
    text = to_json(compiled(defn))

    assert json.loads(text) == compiled(defn)
    assert to_json(compiled(parse_definition(json.loads(defn.model_dump_json())))) == text
    assert_asl_subset(json.loads(text))


@PROPERTY_SETTINGS
@given(dags())
def test_every_step_task_retries_and_failures_are_always_caught(defn: WorkflowDefinition) -> None:
    asl = compiled(defn)

    run_tasks = [
        state
        for _, state in iter_states(asl)
        if state["Type"] == "Task" and state["Parameters"]["Payload"]["action"] == "run"
    ]
    assert len(run_tasks) == len(defn.steps)
    assert all(task["Retry"] == [LAMBDA_RETRY, DEFAULT_PROVIDER_RETRY] for task in run_tasks)
    # Errors inside a Parallel surface at the enclosing top-level Parallel, so every
    # top-level Task and Parallel must catch everything.
    for state in asl["States"].values():
        if (
            state["Type"] == "Parallel"
            or state.get("Parameters", {}).get("Payload", {}).get("action") == "run"
        ):
            assert [c["ErrorEquals"] for c in state["Catch"]] == [
                ["WorkflowPaused"],
                ["WorkflowCancelled"],
                ["States.ALL"],
            ]
    assert all(
        "Catch" not in state
        for scope in iter_scopes(asl)
        if scope is not asl
        for state in scope["States"].values()
    )


@PROPERTY_SETTINGS
@given(dags(), st.booleans())
def test_a_happy_run_calls_every_step_once_after_its_dependencies(
    defn: WorkflowDefinition, reverse_branches: bool
) -> None:
    calls = walk(compiled(defn), reverse_branches=reverse_branches)

    assert_respects_dependencies(defn, calls)


@PROPERTY_SETTINGS
@given(dags())
def test_the_layout_never_runs_dependent_steps_concurrently(defn: WorkflowDefinition) -> None:
    assert ancestor_pairs(defn) <= happens_before(compiled(defn))


@PROPERTY_SETTINGS
@given(sp_trees)
def test_series_parallel_graphs_are_laid_out_exactly(tree: Tree) -> None:
    defn = sp_definition(tree)

    assert happens_before(compiled(defn)) == ancestor_pairs(defn)


@PROPERTY_SETTINGS
@given(st.integers(2, 12).flatmap(lambda n: st.tuples(st.just(n), st.sets(edge(n)))))
def test_cycles_are_rejected_and_the_named_cycle_is_real(graph: tuple[int, set[Any]]) -> None:
    size, edges = graph
    deps: dict[str, list[str]] = {f"s{n}": [] for n in range(size)}
    for child, parent in sorted(edges):
        deps[f"s{child}"].append(f"s{parent}")
    data = {"name": "wf", "steps": [step(name, *found) for name, found in deps.items()]}

    try:
        parse_definition(data)
    except ValidationFailed as failed:
        cycles = [e.message.removeprefix("cycle: ") for e in failed.errors]
        assert cycles and all(e.message.startswith("cycle: ") for e in failed.errors)
        for cycle in cycles:
            names = cycle.split(" -> ")
            assert names[0] == names[-1]
            assert all(b in deps[a] for a, b in zip(names, names[1:], strict=False))
    else:
        assert _acyclic(deps)


def _acyclic(deps: dict[str, list[str]]) -> bool:
    remaining = {name: set(found) for name, found in deps.items()}
    while remaining:
        ready = [name for name, found in remaining.items() if not found & remaining.keys()]
        if not ready:
            return False
        for name in ready:
            del remaining[name]
    return True
