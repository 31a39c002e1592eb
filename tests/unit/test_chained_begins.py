"""The local engine's chained begins: which step each step's completion begins, and the
statement that does it staying one psycopg parses once."""

from __future__ import annotations

from typing import Any

from psycopg import _queries

from llm_orchestrator.compiler import compile_workflow
from llm_orchestrator.engine.local import next_steps
from llm_orchestrator.store import step_runs
from llm_orchestrator.workflows.models import WorkflowDefinition


def _llm(step_id: str, *depends_on: str) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "llm",
        "provider": "openai",
        "model": "gpt-4",
        "prompt": "say {{x}}",
        "output": [f"out_{step_id}"],
        "depends_on": list(depends_on),
    }


def _machine(*steps: dict[str, Any]) -> dict[str, Any]:
    definition = WorkflowDefinition.model_validate({"name": "w", "steps": list(steps)})
    return compile_workflow(definition, step_runner_arn="arn:aws:lambda:us-east-1:1:function:r")


def test_a_chain_begins_each_next_step_and_the_last_begins_none() -> None:
    machine = _machine(_llm("a"), _llm("b", "a"), _llm("c", "b"))

    assert next_steps(machine) == {"a": "b", "b": "c"}


def test_a_fan_out_is_not_chained_but_the_steps_inside_each_branch_are() -> None:
    # a, then b and c at once (a Parallel), c's branch going on to d, then e after both.
    machine = _machine(
        _llm("a"), _llm("b", "a"), _llm("c", "a"), _llm("d", "c"), _llm("e", "b", "d")
    )

    # Nothing begins a Parallel's branches or what follows the Parallel early.
    assert next_steps(machine) == {"c": "d"}


def test_the_step_statements_fit_psycopg_statement_cache() -> None:
    # Longer statements are parsed again on every execution (0.1-0.2 ms a step).
    for calls in (False, True):
        assert len(step_runs._complete_and_begin_sql(calls=calls)) <= (
            _queries.MAX_CACHED_STATEMENT_LENGTH
        )
        assert len(step_runs._completion_sql(calls=calls)) + 30 <= (
            _queries.MAX_CACHED_STATEMENT_LENGTH
        )
