"""The local engine's chained begins: which step each step's completion begins, and the
statement that does it staying one psycopg parses once."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any

from psycopg import _queries

from llm_orchestrator.audit.trail import canonical_json, link_hash, pending_mac_of
from llm_orchestrator.compiler import compile_workflow
from llm_orchestrator.engine.local import last_steps, next_steps
from llm_orchestrator.store import step_runs
from llm_orchestrator.store.audit import Sealer, outbox_insert
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


def test_the_last_step_of_a_chain_ends_the_run_and_no_other() -> None:
    assert last_steps(_machine(_llm("a"))) == {"a"}
    assert last_steps(_machine(_llm("a"), _llm("b", "a"), _llm("c", "b"))) == {"c"}


def test_a_run_ending_in_a_parallel_has_no_last_step_but_one_after_it_has() -> None:
    # The Parallel ends when all its branches have: no single step's commit ends the run.
    assert last_steps(_machine(_llm("a"), _llm("b", "a"), _llm("c", "a"))) == frozenset()
    # A step after the Parallel ends it again.
    assert last_steps(_machine(_llm("a"), _llm("b", "a"), _llm("c", "a"), _llm("d", "b", "c"))) == {
        "d"
    }


def test_the_step_statement_that_writes_the_end_fits_psycopg_statement_cache() -> None:
    # With the finish event's outbox insert as the lifecycle makes it, the triggers read
    # with it and the provider calls recorded: the longest it gets.
    sealer = Sealer(
        canonical=canonical_json,
        link=partial(link_hash, b"k"),
        pending_mac=partial(pending_mac_of, b"k"),
        rejection=lambda row, reason: {},
    )
    fields = {
        "id": "e",
        "occurred_at": datetime.now(UTC),
        "event_type": "workflow_execution",
        "user_id": "u",
        "action": "finish",
        "resource_type": "execution",
        "resource_id": "x",
        "result": "success",
        "ip_address": None,
        "details": {},
    }
    audit, _ = outbox_insert(fields, sealer, prefix="f_")
    for calls in (False, True):
        for live in (False, True):
            sql = step_runs._complete_and_end_sql(calls=calls, audit=audit, live=live)
            assert len(sql) <= _queries.MAX_CACHED_STATEMENT_LENGTH
