"""``Idempotency-Key`` on ``POST /workflows/{id}/execute``: one execution per key and caller."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest

from llm_orchestrator.clock import utcnow
from llm_orchestrator.server import LocalServer
from llm_orchestrator.store.idempotency import IdempotencyRepository
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import CreateUser, Session
from tests.integration.execution_support import (
    create_workflow,
    llm_step,
    prompts,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("fake_openai")
"""Every test here runs on the fake OpenAI server (conftest's ``server`` points at it)."""


STEPS = [llm_step("a", "say {{x}}", "out")]


async def execute(
    client: httpx.AsyncClient,
    session: Session,
    workflow_id: str,
    body: dict[str, Any],
    key: str | None,
) -> httpx.Response:
    headers = dict(session.headers)
    if key is not None:
        headers["Idempotency-Key"] = key
    return await client.post(f"/workflows/{workflow_id}/execute", headers=headers, json=body)


async def test_a_repeated_key_returns_the_original_answer(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI
) -> None:
    workflow_id = await create_workflow(client, admin, STEPS)
    body = {"inputs": {"x": "1"}}

    first = await execute(client, admin, workflow_id, body, "key-1")
    await wait_for(client, admin, workflow_id, first.json()["execution_id"])
    again = await execute(client, admin, workflow_id, body, "key-1")

    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert prompts(fake_openai) == ["say 1"]


async def test_the_same_key_with_another_body_is_a_conflict(
    client: httpx.AsyncClient, admin: Session
) -> None:
    workflow_id = await create_workflow(client, admin, STEPS)
    await execute(client, admin, workflow_id, {"inputs": {"x": "1"}}, "key-2")

    other_inputs = await execute(client, admin, workflow_id, {"inputs": {"x": "2"}}, "key-2")
    other_mode = await execute(
        client, admin, workflow_id, {"inputs": {"x": "1"}, "async": False}, "key-2"
    )

    for response in (other_inputs, other_mode):
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "conflict"
        assert response.json()["details"] == {"idempotency_key": "key-2"}
        assert response.json()["request_id"].startswith("req-")


async def test_a_waiting_execute_replays_its_finished_answer(
    client: httpx.AsyncClient, admin: Session
) -> None:
    workflow_id = await create_workflow(client, admin, STEPS)
    body = {"inputs": {"x": "1"}, "async": False}

    first = await execute(client, admin, workflow_id, body, "key-3")
    again = await execute(client, admin, workflow_id, body, "key-3")

    assert first.status_code == again.status_code == 200
    assert first.json()["status"] == "completed"
    assert again.json() == first.json()


async def test_keys_belong_to_their_caller(
    client: httpx.AsyncClient, admin: Session, create_user: CreateUser
) -> None:
    dev = await create_user("dev")
    workflow_id = await create_workflow(client, dev, STEPS)
    body = {"inputs": {"x": "1"}}

    mine = await execute(client, dev, workflow_id, body, "shared-key")
    theirs = await execute(client, admin, workflow_id, body, "shared-key")

    assert mine.status_code == theirs.status_code == 202
    assert mine.json()["execution_id"] != theirs.json()["execution_id"]


async def test_a_refused_request_leaves_the_key_free(
    client: httpx.AsyncClient, admin: Session
) -> None:
    workflow_id = await create_workflow(client, admin, STEPS)

    refused = await execute(client, admin, workflow_id, {"inputs": {}}, "key-4")
    corrected = await execute(client, admin, workflow_id, {"inputs": {"x": "1"}}, "key-4")

    assert refused.status_code == 400
    assert corrected.status_code == 202, corrected.text


@pytest.mark.parametrize("key", [b"", b"has space", b"x" * 256, "café".encode("latin-1")])
async def test_a_malformed_key_is_a_validation_error(
    client: httpx.AsyncClient, admin: Session, key: bytes
) -> None:
    workflow_id = await create_workflow(client, admin, STEPS)

    response = await client.post(
        f"/workflows/{workflow_id}/execute",
        headers=[*admin.headers.items(), ("Idempotency-Key", key)],
        json={"inputs": {"x": "1"}},
    )

    assert response.status_code == 400, response.text
    assert response.json()["details"]["errors"][0]["field"] == "Idempotency-Key"


async def test_keys_expire_after_24_hours(server: LocalServer) -> None:
    keys = IdempotencyRepository(server.runtime.db)
    day = timedelta(hours=24)
    start = utcnow()

    assert await keys.claim("u1", "k", "hash-a", now=start, ttl=day) is None
    await keys.attach_execution("u1", "k", "exec-1")
    held = await keys.claim("u1", "k", "hash-b", now=start + timedelta(hours=23), ttl=day)
    expired = await keys.claim("u1", "k", "hash-b", now=start + timedelta(hours=25), ttl=day)

    assert held is not None and held.request_hash == "hash-a" and held.execution_id == "exec-1"
    assert expired is None


async def test_concurrent_requests_with_one_key_start_one_execution(
    client: httpx.AsyncClient, admin: Session
) -> None:
    workflow_id = await create_workflow(client, admin, STEPS)
    body = {"inputs": {"x": "1"}}

    answers = await asyncio.gather(
        *(execute(client, admin, workflow_id, body, "key-5") for _ in range(4))
    )

    started = {r.json()["execution_id"] for r in answers if r.status_code == 202}
    assert len(started) == 1
    assert all(r.status_code in (202, 409) for r in answers)
    stats = await client.get("/admin/stats", headers=admin.headers)
    assert stats.json()["total_executions"] == 1
