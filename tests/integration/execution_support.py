"""Helpers of the execution tests: create, run, steer and watch workflows over HTTP.

The fixtures they run on (``server``, ``client``, ``admin``, ``fake_openai``) are in
``conftest.py``; these are plain functions.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import psycopg

from llm_orchestrator.executions.status import TERMINAL
from llm_orchestrator.server import LocalServer
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import FAKE_API_KEY, Session, serving

__all__ = ["FAKE_API_KEY", "TERMINAL", "serving"]

FAST_RETRY = {"max_attempts": 3, "backoff_seconds": 1, "backoff_rate": 1.0}


def llm_step(step_id: str, prompt: str, output: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "llm",
        "provider": "openai",
        "model": "gpt-4",
        "prompt": prompt,
        "output": [output],
        "retry": FAST_RETRY,
        **extra,
    }


async def create_workflow(
    client: httpx.AsyncClient, session: Session, steps: list[dict[str, Any]], **extra: Any
) -> str:
    body = {"name": "test-workflow", "version": "1.0", "steps": steps, **extra}
    response = await client.post("/workflows", headers=session.headers, json=body)
    assert response.status_code == 201, response.text
    workflow_id: str = response.json()["id"]
    return workflow_id


async def start_execution(
    client: httpx.AsyncClient, session: Session, workflow_id: str, inputs: dict[str, Any]
) -> str:
    response = await client.post(
        f"/workflows/{workflow_id}/execute",
        headers=session.headers,
        json={"inputs": inputs, "async": True},
    )
    assert response.status_code == 202, response.text
    execution_id: str = response.json()["execution_id"]
    return execution_id


async def launch(
    client: httpx.AsyncClient,
    session: Session,
    steps: list[dict[str, Any]],
    inputs: dict[str, Any],
    **extra: Any,
) -> tuple[str, str]:
    """Create a workflow of ``steps`` and start it on ``inputs`` (asynchronously); returns
    the workflow's and the execution's ids."""
    workflow_id = await create_workflow(client, session, steps, **extra)
    return workflow_id, await start_execution(client, session, workflow_id, inputs)


async def launch_held(
    client: httpx.AsyncClient,
    session: Session,
    fake: FakeOpenAI,
    steps: list[dict[str, Any]],
    inputs: dict[str, Any],
    count: int = 1,
) -> tuple[str, str]:
    """:func:`launch` with ``fake`` holding every provider call; returns once ``count``
    calls are held: those steps are running, and stay so until ``fake.release()``."""
    fake.hold()
    ids = await launch(client, session, steps, inputs)
    await wait_held(fake, count)
    return ids


async def get_status(
    client: httpx.AsyncClient, session: Session, workflow_id: str, execution_id: str
) -> dict[str, Any]:
    response = await client.get(
        f"/workflows/{workflow_id}/status",
        headers=session.headers,
        params={"executionId": execution_id},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_for(
    client: httpx.AsyncClient,
    session: Session,
    workflow_id: str,
    execution_id: str,
    statuses: tuple[str, ...] = TERMINAL,
    *,
    timeout: float = 15.0,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = await get_status(client, session, workflow_id, execution_id)
        if body["status"] in statuses:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"execution stayed {body['status']}: {body}")
        await asyncio.sleep(0.02)


async def wait_until(predicate: Any, *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def wait_held(fake: FakeOpenAI, count: int = 1) -> None:
    """Until ``count`` provider calls are held by ``fake.hold()``: those steps are running.

    A generous deadline, not a wait: it ends as soon as the calls arrive. Ten seconds was
    too short once with four test suites sharing two cores."""
    await wait_until(lambda: fake.held_count >= count, timeout=60.0)


async def wait_parked(server: LocalServer, execution_id: str, step_id: str) -> None:
    """Until the paused execution's next step has parked: from then on it starts only on
    resume, so an assertion that nothing else ran is not a guess about timing."""

    async def parked() -> bool:
        async with server.runtime.db.connection() as conn:
            cur = await conn.execute(
                "SELECT 1 FROM parked_tasks WHERE execution_id = %s AND step_id = %s",
                (execution_id, step_id),
            )
            return await cur.fetchone() is not None

    deadline = time.monotonic() + 10.0
    while not await parked():
        if time.monotonic() > deadline:
            raise AssertionError(f"step {step_id} never parked")
        await asyncio.sleep(0.01)


async def wait_run_over(server: LocalServer) -> None:
    """Until the engine has no run left in this process: nothing more can start."""
    engine: Any = server.runtime.engine
    await wait_until(lambda: engine.running_count == 0)


def prompts(fake: FakeOpenAI) -> list[str]:
    """The user prompt of every chat request the fake received, in order."""
    return [
        message["content"]
        for request in fake.requests_to("/v1/chat/completions")
        for message in request.body["messages"]
        if message["role"] == "user"
    ]


async def checkpoints(
    client: httpx.AsyncClient,
    session: Session,
    workflow_id: str,
    execution_id: str,
    *,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """A page of the execution's checkpoints (``GET /state/{id}/checkpoints``), oldest first."""
    response = await client.get(
        f"/state/{workflow_id}/checkpoints",
        headers=session.headers,
        params={"executionId": execution_id, "limit": limit, "offset": offset},
    )
    assert response.status_code == 200, response.text
    listed: list[dict[str, Any]] = response.json()["checkpoints"]
    return listed


async def control(
    client: httpx.AsyncClient, session: Session, action: str, workflow_id: str, execution_id: str
) -> httpx.Response:
    """``POST /workflows/{id}/pause|resume|cancel`` for one execution."""
    return await client.post(
        f"/workflows/{workflow_id}/{action}",
        headers=session.headers,
        params={"executionId": execution_id},
    )


async def wait_step(
    client: httpx.AsyncClient,
    session: Session,
    workflow_id: str,
    execution_id: str,
    step_id: str,
    status: str,
    *,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """Until GET status shows ``step_id`` in ``status``; returns that status body."""
    deadline = time.monotonic() + timeout
    while True:
        body = await get_status(client, session, workflow_id, execution_id)
        if body["steps"][step_id]["status"] == status:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"step {step_id} never became {status}: {body}")
        await asyncio.sleep(0.01)


async def lock_waiters(database_url: str, count: int) -> None:
    """Until ``count`` statements wait on a lock (a row or table the test holds)."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for _ in range(6000):
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            )
            row = await cur.fetchone()
            if row is not None and row[0] >= count:
                return
            await asyncio.sleep(0.01)
    raise AssertionError(f"{count} statement(s) never waited on a lock")
