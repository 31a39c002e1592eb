"""The first steps of a Parallel begin at once on a pending execution: both begin.

Each begin locks the execution row and may mark it running; with a share lock each would
wait for the other's to update the row, a deadlock PostgreSQL breaks by failing one begin
(and with it the execution)."""

from __future__ import annotations

import asyncio

import httpx
import psycopg
import pytest

from llm_orchestrator.executions.status import StepStatus
from llm_orchestrator.server import LocalServer
from tests.integration.conftest import Session
from tests.integration.execution_support import (
    create_workflow,
    llm_step,
    lock_waiters,
    start_execution,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("fake_openai")


async def test_two_first_steps_beginning_together_on_a_pending_execution_both_begin(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, database_url: str
) -> None:
    workflow_id = await create_workflow(
        client, admin, [llm_step("left", "left {{x}}", "l"), llm_step("right", "right {{x}}", "r")]
    )
    execution_id = await start_execution(client, admin, workflow_id, {"x": "1"})
    await wait_for(client, admin, workflow_id, execution_id)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        # Back to before its first step, as a restarted or fresh run finds it.
        await conn.execute("DELETE FROM step_runs WHERE execution_id = %s", (execution_id,))
        await conn.execute(
            "UPDATE executions SET status = 'pending', completed_at = NULL WHERE id = %s",
            (execution_id,),
        )
    repo = server.runtime.step_run_store
    # A reader holding the row makes both begins reach it before either can go on: the
    # interleaving that deadlocked.
    reader = await psycopg.AsyncConnection.connect(database_url)
    try:
        await reader.execute("SELECT 1 FROM executions WHERE id = %s FOR SHARE", (execution_id,))
        begins = [
            asyncio.create_task(
                repo.begin_step(execution_id, step, step_type="llm", provider="openai")
            )
            for step in ("left", "right")
        ]
        await lock_waiters(database_url, 2)
    finally:
        await reader.rollback()
        await reader.close()

    results = await asyncio.wait_for(asyncio.gather(*begins), timeout=30)

    assert [started for _, started in results] == [True, True]
    assert all(context.step_status is None for context, _ in results)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute("SELECT status FROM executions WHERE id = %s", (execution_id,))
        assert await cur.fetchone() == ("running",)
        cur = await conn.execute(
            "SELECT step_id, status FROM step_runs WHERE execution_id = %s ORDER BY step_id",
            (execution_id,),
        )
        assert await cur.fetchall() == [
            ("left", StepStatus.RUNNING.value),
            ("right", StepStatus.RUNNING.value),
        ]
