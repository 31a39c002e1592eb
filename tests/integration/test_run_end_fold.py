"""Under the local engine, the statement that commits a run's last step writes the
execution's end too (``StepRunRepository.complete_and_end``): one transaction less per run.

What the end did on its own must hold: its ``finish`` audit event commits with it, a cancel
that gets to the execution first wins (and one that comes after finds it ended), a failure
recorded earlier still makes the ending ``failed``. (Its announcement, the completion event,
is ``test_triggers``'s.)"""

from __future__ import annotations

import asyncio

import httpx
import psycopg
import pytest

from llm_orchestrator.server import LocalServer
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import Session
from tests.integration.execution_support import (
    control,
    launch,
    launch_held,
    llm_step,
    lock_waiters,
    wait_for,
)
from tests.integration.test_execution_races import check_invariants, db_rows

ONE_STEP = [llm_step("only", "say {{x}}", "out")]
CHAIN = [
    llm_step("a", "a {{x}}", "a_out"),
    llm_step("b", "b {{a.a_out}}", "b_out", depends_on=["a"]),
]


async def _transactions(server: LocalServer, execution_id: str) -> dict[str, int]:
    """The transaction that last wrote the execution's row and each step's row (``xmin``)."""
    [execution] = await db_rows(
        server, "SELECT xmin::text::bigint AS x FROM executions WHERE id = %s", execution_id
    )
    steps = await db_rows(
        server,
        "SELECT step_id, xmin::text::bigint AS x FROM step_runs WHERE execution_id = %s",
        execution_id,
    )
    return {"execution": execution["x"], **{row["step_id"]: row["x"] for row in steps}}


@pytest.mark.parametrize("steps", [ONE_STEP, CHAIN], ids=["one step", "chain"])
async def test_the_end_commits_with_the_last_step(
    client: httpx.AsyncClient,
    admin: Session,
    server: LocalServer,
    fake_openai: FakeOpenAI,
    steps: list[dict[str, object]],
) -> None:
    workflow_id, execution_id = await launch(client, admin, steps, {"x": "1"})
    await wait_for(client, admin, workflow_id, execution_id)

    body = await check_invariants(
        server, fake_openai, client, admin, workflow_id, execution_id, finished_runs=1
    )
    assert body["status"] == "completed"
    written = await _transactions(server, execution_id)
    last = steps[-1]["id"]
    # The execution's end was written by the transaction that completed its last step.
    assert written["execution"] == written[last], written
    if len(steps) > 1:
        assert written["execution"] != written[steps[0]["id"]]
    # And at one time: the run did not end before its last step did.
    [ended] = await db_rows(
        server,
        "SELECT e.completed_at AS execution, r.completed_at AS step FROM executions e"
        " JOIN step_runs r ON r.execution_id = e.id AND r.step_id = %s WHERE e.id = %s",
        last,
        execution_id,
    )
    assert ended["execution"] == ended["step"], ended


async def test_a_cancel_that_reaches_the_execution_first_wins_over_the_last_commit(
    client: httpx.AsyncClient,
    admin: Session,
    server: LocalServer,
    fake_openai: FakeOpenAI,
    database_url: str,
) -> None:
    workflow_id, execution_id = await launch_held(client, admin, fake_openai, ONE_STEP, {"x": "1"})
    holder = await psycopg.AsyncConnection.connect(database_url)
    try:
        # The cancel queues on the execution's row first, then the step's commit.
        await holder.execute("SELECT 1 FROM executions WHERE id = %s FOR SHARE", (execution_id,))
        cancel = asyncio.create_task(control(client, admin, "cancel", workflow_id, execution_id))
        await lock_waiters(database_url, 1)
        fake_openai.release()
        await lock_waiters(database_url, 2)
    finally:
        await holder.rollback()
        await holder.close()

    cancelled = await cancel
    assert cancelled.status_code == 200, cancelled.text
    body = await check_invariants(
        server, fake_openai, client, admin, workflow_id, execution_id, finished_runs=1
    )
    assert body["status"] == "cancelled"
    assert body["error"]["type"] == "WorkflowCancelled"
    # The step's outputs were not committed: the cancel had closed it.
    assert body["steps"]["only"]["status"] == "failed"
    [step] = await db_rows(
        server, "SELECT outputs FROM step_runs WHERE execution_id = %s", execution_id
    )
    assert step["outputs"] is None
    assert (
        await db_rows(server, "SELECT 1 FROM checkpoints WHERE execution_id = %s", execution_id)
        == []
    )


async def test_a_cancel_after_the_last_commit_finds_the_execution_ended(
    client: httpx.AsyncClient,
    admin: Session,
    server: LocalServer,
    fake_openai: FakeOpenAI,
    database_url: str,
) -> None:
    workflow_id, execution_id = await launch_held(client, admin, fake_openai, ONE_STEP, {"x": "1"})
    holder = await psycopg.AsyncConnection.connect(database_url)
    try:
        # The step's commit queues on the execution's row first, then the cancel.
        await holder.execute("SELECT 1 FROM executions WHERE id = %s FOR SHARE", (execution_id,))
        fake_openai.release()
        await lock_waiters(database_url, 1)
        cancel = asyncio.create_task(control(client, admin, "cancel", workflow_id, execution_id))
        await lock_waiters(database_url, 2)
    finally:
        await holder.rollback()
        await holder.close()

    cancelled = await cancel
    assert cancelled.status_code == 409, cancelled.text
    body = await check_invariants(
        server, fake_openai, client, admin, workflow_id, execution_id, finished_runs=1
    )
    assert body["status"] == "completed"
    assert body["steps"]["only"]["outputs"] == {"out": body["steps"]["only"]["outputs"]["out"]}
    written = await _transactions(server, execution_id)
    assert written["execution"] == written["only"], written


async def test_a_failure_recorded_before_the_last_commit_still_fails_the_execution(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    workflow_id, execution_id = await launch_held(client, admin, fake_openai, ONE_STEP, {"x": "1"})
    # What a Parallel branch's failure handler records while another step still runs.
    error = {"type": "StepFailed", "message": "a branch failed", "step_id": "elsewhere"}
    await server.runtime.step_run_store.record_failure(execution_id, None, error)
    fake_openai.release()

    body = await wait_for(client, admin, workflow_id, execution_id)

    assert body["status"] == "failed", body
    assert body["error"]["type"] == "StepFailed"
    assert body["error"]["message"] == "a branch failed"
    # The step itself committed; the end was written by the run's end, after it.
    assert body["steps"]["only"]["status"] == "completed"
    written = await _transactions(server, execution_id)
    assert written["execution"] != written["only"], written
    await check_invariants(
        server, fake_openai, client, admin, workflow_id, execution_id, finished_runs=1
    )
