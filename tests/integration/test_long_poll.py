"""Long-poll: ``GET /workflows/{id}/status?wait=N`` holds the answer until the execution's
status or a step's status changes, or N seconds pass; it sees changes made by another
process (the waiter and the writer share nothing but the database)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from llm_orchestrator.config import Settings
from llm_orchestrator.server import LocalServer
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import Session
from tests.integration.execution_support import (
    create_workflow,
    get_status,
    launch,
    launch_held,
    llm_step,
    serving,
    start_execution,
    wait_for,
    wait_held,
)

pytestmark = pytest.mark.usefixtures("fake_openai")
"""Every test here runs on the fake OpenAI server (conftest's ``server`` points at it)."""


TWO_STEPS = [
    llm_step("a", "first {{x}}", "a_out"),
    llm_step("b", "second {{a_out}}", "b_out", depends_on=["a"]),
]
POLL_QUERY = "SELECT e.status, ARRAY(SELECT step_id FROM step_runs"


async def long_poll(
    client: httpx.AsyncClient, session: Session, workflow_id: str, execution_id: str, wait: int
) -> httpx.Response:
    return await client.get(
        f"/workflows/{workflow_id}/status",
        headers=session.headers,
        params={"executionId": execution_id, "wait": wait},
        timeout=60,
    )


async def wait_polling(server: LocalServer) -> None:
    """Until a held status request has read the execution's signature again: it is past
    its first read and waiting for a change."""
    deadline = time.monotonic() + 30
    while True:
        async with server.runtime.db.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) AS n FROM pg_stat_activity"
                " WHERE datname = current_database() AND query LIKE %s",
                (POLL_QUERY.replace("_", r"\_") + "%",),
            )
            row = await cur.fetchone()
        if row is not None and row["n"] > 0:
            return
        assert time.monotonic() < deadline, "the status request never started waiting"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("wait", ["26", "-1", "1.5", "soon", "100000000000000000000"])
async def test_wait_outside_0_to_25_seconds_is_rejected(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI, wait: str
) -> None:
    workflow_id, execution_id = await launch(client, admin, TWO_STEPS[:1], {"x": "1"})

    response = await client.get(
        f"/workflows/{workflow_id}/status",
        headers=admin.headers,
        params={"executionId": execution_id, "wait": wait},
    )

    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    assert [e["field"] for e in body["details"]["errors"]] == ["wait"]
    assert body["request_id"] == response.headers["X-Request-ID"]


async def test_a_step_change_answers_the_held_request(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI, server: LocalServer
) -> None:
    workflow_id, execution_id = await launch_held(
        client, admin, fake_openai, TWO_STEPS, {"x": "1"}
    )  # step a is running, and stays so until released

    poll = asyncio.create_task(long_poll(client, admin, workflow_id, execution_id, 25))
    await wait_polling(server)
    assert not poll.done()
    released = time.monotonic()
    fake_openai.release(hold_more=True)  # a completes; b starts and is held in turn
    response = await poll

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "running"
    assert body["steps"]["a"]["status"] == "completed"
    assert time.monotonic() - released < 20  # well before the 25 s the client allowed
    fake_openai.release()
    await wait_for(client, admin, workflow_id, execution_id)


async def test_nothing_changing_answers_after_wait_seconds_with_the_current_state(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI
) -> None:
    workflow_id, execution_id = await launch_held(
        client, admin, fake_openai, TWO_STEPS[:1], {"x": "1"}
    )
    before = await get_status(client, admin, workflow_id, execution_id)

    started = time.monotonic()
    response = await long_poll(client, admin, workflow_id, execution_id, 1)

    assert response.status_code == 200
    assert time.monotonic() - started >= 1.0
    assert response.json() == before
    fake_openai.release()
    await wait_for(client, admin, workflow_id, execution_id)


async def test_an_ended_execution_is_answered_at_once(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI
) -> None:
    workflow_id, execution_id = await launch(client, admin, TWO_STEPS[:1], {"x": "1"})
    final = await wait_for(client, admin, workflow_id, execution_id)

    started = time.monotonic()
    response = await long_poll(client, admin, workflow_id, execution_id, 25)

    assert response.status_code == 200
    assert response.json() == final
    assert time.monotonic() - started < 10  # not the 25 s asked for


async def test_a_change_made_by_another_process_answers_the_held_request(
    client: httpx.AsyncClient,
    admin: Session,
    fake_openai: FakeOpenAI,
    server: LocalServer,
    settings: Settings,
) -> None:
    # A second server on the same database, sharing nothing else with the first: the
    # execution runs there, and the first server holds the status request.
    async with serving(settings, fake_openai) as other:
        transport = httpx.ASGITransport(app=other.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://o/api/v1") as there:
            fake_openai.hold()
            workflow_id = await create_workflow(client, admin, TWO_STEPS[:1])
            execution_id = await start_execution(there, admin, workflow_id, {"x": "1"})
            await wait_held(fake_openai)

            poll = asyncio.create_task(long_poll(client, admin, workflow_id, execution_id, 25))
            await wait_polling(server)
            fake_openai.release()
            response = await poll
            await wait_for(there, admin, workflow_id, execution_id)

    assert response.status_code == 200
    assert response.json()["steps"]["a"]["status"] == "completed"
