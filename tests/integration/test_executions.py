"""Executing workflows over HTTP: the real OpenAI SDK against the fake server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import psycopg
import pytest

from tests.fakes.embeddings import DEFAULT_DIM
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import CreateUser, Session
from tests.integration.execution_support import (
    create_workflow,
    get_status,
    launch,
    llm_step,
    prompts,
    start_execution,
    wait_for,
    wait_held,
)
from tests.samples import RAG_WORKFLOW

pytestmark = pytest.mark.usefixtures("fake_openai")
"""Every test here runs on the fake OpenAI server (conftest's ``server`` points at it)."""


SENTIMENT_STEP = {
    "id": "analyze",
    "type": "llm",
    "provider": "openai",
    "model": "gpt-4",
    "prompt": "Analyze sentiment (positive/negative/neutral): {{input}}",
    "temperature": 0.3,
    "max_tokens": 50,
    "output": ["sentiment"],
}


async def test_common_workflow_1_runs_end_to_end(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI
) -> None:
    fake_openai.responder = lambda body: "positive"
    workflow_id = await create_workflow(client, admin, [SENTIMENT_STEP])

    response = await client.post(
        f"/workflows/{workflow_id}/execute",
        headers=admin.headers,
        json={"inputs": {"input": "This product is amazing!"}, "async": True},
    )

    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["execution_id"].startswith("exec-")
    assert accepted["workflow_id"] == workflow_id
    assert accepted["status"] == "pending"
    assert accepted["started_at"].endswith("Z")
    final = await wait_for(client, admin, workflow_id, accepted["execution_id"])
    usage = final["steps"]["analyze"]
    assert final == {
        "id": accepted["execution_id"],
        "workflow_id": workflow_id,
        "status": "completed",
        "started_at": accepted["started_at"],
        "completed_at": final["completed_at"],
        "context": {
            "inputs": {"input": "This product is amazing!"},
            "outputs": {"sentiment": "positive"},
        },
        "steps": {
            "analyze": {
                "status": "completed",
                "outputs": {"sentiment": "positive"},
                # Beyond the reference: what `llmo run` shows for each step.
                "attempts": 1,
                "latency_ms": usage["latency_ms"],
                "input_tokens": usage["input_tokens"],
                "output_tokens": usage["output_tokens"],
                "usage": {
                    "input_tokens": usage["input_tokens"],
                    "output_tokens": usage["output_tokens"],
                    "cost_usd": usage["usage"]["cost_usd"],
                    "attempts": [
                        {
                            "provider": "openai",
                            "model": "gpt-4",
                            "outcome": "succeeded",
                            "latency_ms": usage["usage"]["attempts"][0]["latency_ms"],
                            "input_tokens": usage["input_tokens"],
                            "output_tokens": usage["output_tokens"],
                            "cost_usd": usage["usage"]["cost_usd"],
                        }
                    ],
                },
            }
        },
        # Beyond the reference: the steps' tokens and cost, summed.
        "usage": {
            "input_tokens": usage["input_tokens"],
            "output_tokens": usage["output_tokens"],
            "cost_usd": usage["usage"]["cost_usd"],
        },
    }
    assert usage["usage"]["cost_usd"] == pytest.approx(
        (usage["input_tokens"] * 30.0 + usage["output_tokens"] * 60.0) / 1_000_000
    )
    assert usage["latency_ms"] > 0 and usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert final["completed_at"].endswith("Z")
    assert prompts(fake_openai) == [
        "Analyze sentiment (positive/negative/neutral): This product is amazing!"
    ]


async def test_sync_execute_waits_and_returns_the_final_execution(
    client: httpx.AsyncClient, admin: Session
) -> None:
    workflow_id = await create_workflow(client, admin, [SENTIMENT_STEP])

    response = await client.post(
        f"/workflows/{workflow_id}/execute",
        headers=admin.headers,
        json={"inputs": {"input": "meh"}, "async": False},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "completed"
    assert body["execution_id"] == body["id"]
    assert body["steps"]["analyze"]["outputs"] == {
        "sentiment": "echo: Analyze sentiment (positive/negative/neutral): meh"
    }


async def test_missing_input_is_rejected_naming_it(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI
) -> None:
    workflow_id = await create_workflow(client, admin, [SENTIMENT_STEP])

    response = await client.post(
        f"/workflows/{workflow_id}/execute", headers=admin.headers, json={"inputs": {}}
    )

    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "validation_error"
    assert "'input'" in body["message"]
    assert body["details"]["errors"] == [
        {"field": "inputs.input", "message": "Required input 'input' is missing"}
    ]
    assert fake_openai.requests == []


async def test_an_edited_workflow_requires_its_new_inputs_at_once(
    client: httpx.AsyncClient, admin: Session
) -> None:
    workflow_id = await create_workflow(client, admin, [SENTIMENT_STEP])
    await start_execution(client, admin, workflow_id, {"input": "fine"})
    edited = {**SENTIMENT_STEP, "prompt": "Compare {{input}} with {{other}}"}
    body = {"name": "test-workflow", "version": "1.1", "steps": [edited]}
    updated = await client.put(f"/workflows/{workflow_id}", headers=admin.headers, json=body)
    assert updated.status_code == 200, updated.text

    response = await client.post(
        f"/workflows/{workflow_id}/execute",
        headers=admin.headers,
        json={"inputs": {"input": "fine"}, "async": True},
    )

    assert response.status_code == 400, response.text
    assert response.json()["details"]["errors"] == [
        {"field": "inputs.other", "message": "Required input 'other' is missing"}
    ]


async def test_outputs_flow_along_depends_on(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI
) -> None:
    fake_openai.responder = lambda body: body["messages"][-1]["content"].upper()
    workflow_id = await create_workflow(
        client,
        admin,
        [
            llm_step("first", "say {{topic}}", "shout"),
            llm_step("second", "repeat {{shout}} about {{topic}}", "again", depends_on=["first"]),
        ],
    )

    execution_id = await start_execution(client, admin, workflow_id, {"topic": "cats"})
    final = await wait_for(client, admin, workflow_id, execution_id)

    assert final["status"] == "completed"
    assert prompts(fake_openai) == ["say cats", "repeat SAY CATS about cats"]
    assert final["context"]["outputs"] == {
        "shout": "SAY CATS",
        "again": "REPEAT SAY CATS ABOUT CATS",
    }


async def test_status_lists_steps_in_the_definitions_order_with_their_runs(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI
) -> None:
    # Written in the opposite order to the one they run in: the status follows the
    # definition, and each step carries its own run.
    fake_openai.responder = lambda body: body["messages"][-1]["content"].upper()
    workflow_id = await create_workflow(
        client,
        admin,
        [
            llm_step("second", "repeat {{shout}}", "again", depends_on=["first"]),
            llm_step("first", "say {{topic}}", "shout"),
        ],
    )

    execution_id = await start_execution(client, admin, workflow_id, {"topic": "cats"})
    final = await wait_for(client, admin, workflow_id, execution_id)

    assert final["status"] == "completed"
    assert list(final["steps"]) == ["second", "first"]
    assert final["steps"]["first"]["outputs"] == {"shout": "SAY CATS"}
    assert final["steps"]["second"]["outputs"] == {"again": "REPEAT SAY CATS"}
    for step in final["steps"].values():
        assert step["status"] == "completed"
        assert step["attempts"] == 1
        assert step["usage"]["attempts"][0]["outcome"] == "succeeded"


async def test_rate_limited_call_is_retried_then_succeeds(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI
) -> None:
    workflow_id = await create_workflow(client, admin, [llm_step("only", "hi {{name}}", "reply")])
    fake_openai.fail_next(429)

    execution_id = await start_execution(client, admin, workflow_id, {"name": "bob"})
    final = await wait_for(client, admin, workflow_id, execution_id)

    assert final["status"] == "completed"
    statuses = [r.status for r in fake_openai.requests_to("/v1/chat/completions")]
    assert statuses == [429, 200]
    assert final["steps"]["only"]["outputs"] == {"reply": "echo: hi bob"}


async def test_permanent_provider_error_fails_with_a_readable_error(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI
) -> None:
    workflow_id = await create_workflow(
        client, admin, [llm_step("only", "hi {{name}}", "reply", model="no-such-model")]
    )
    fake_openai.models = frozenset({"gpt-4"})

    execution_id = await start_execution(client, admin, workflow_id, {"name": "bob"})
    final = await wait_for(client, admin, workflow_id, execution_id)

    assert final["status"] == "failed"
    assert final["error"]["type"] == "ProviderBadRequest"
    assert final["error"]["step_id"] == "only"
    assert "no-such-model" in final["error"]["message"]
    assert final["steps"]["only"]["status"] == "failed"
    assert final["steps"]["only"]["error"]["type"] == "ProviderBadRequest"
    # Permanent: asked once, never retried.
    assert len(fake_openai.requests_to("/v1/chat/completions")) == 1


async def test_unconfigured_vector_database_fails_clearly(
    client: httpx.AsyncClient, admin: Session
) -> None:
    rag = RAG_WORKFLOW["steps"][:2]  # embed, then search Pinecone with no key configured
    workflow_id = await create_workflow(client, admin, rag)

    execution_id = await start_execution(client, admin, workflow_id, {"query": "why?"})
    final = await wait_for(client, admin, workflow_id, execution_id)

    assert final["status"] == "failed"
    assert final["steps"]["embed_query"]["status"] == "completed"
    assert len(final["steps"]["embed_query"]["outputs"]["query_embedding"]) == DEFAULT_DIM
    assert final["error"]["type"] == "ProviderAuthError"
    assert final["error"]["message"] == (
        "Pinecone is not configured: set PINECONE_API_KEY (a secret through"
        " POST /admin/secrets or an environment variable)"
    )


async def test_parallel_branches_overlap_in_time(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI
) -> None:
    fake_openai.latency = 0.3
    workflow_id = await create_workflow(
        client,
        admin,
        [
            llm_step("left", "left {{x}}", "l"),
            llm_step("right", "right {{x}}", "r"),
            llm_step("join", "{{l}} and {{r}}", "both", depends_on=["left", "right"]),
        ],
    )

    execution_id = await start_execution(client, admin, workflow_id, {"x": "1"})
    final = await wait_for(client, admin, workflow_id, execution_id)

    assert final["status"] == "completed"
    calls = fake_openai.requests_to("/v1/chat/completions")
    left, right, join = sorted(calls, key=lambda r: r.started_at)
    assert {left.body["messages"][-1]["content"], right.body["messages"][-1]["content"]} == {
        "left 1",
        "right 1",
    }
    assert right.started_at < left.finished_at  # both in flight at once
    assert join.started_at >= max(left.finished_at, right.finished_at)
    assert final["context"]["outputs"]["both"] == "echo: echo: left 1 and echo: right 1"


async def test_other_users_execution_is_not_found(
    client: httpx.AsyncClient, admin: Session, create_user: CreateUser
) -> None:
    alice = await create_user("alice")
    bob = await create_user("bob")
    workflow_id, execution_id = await launch(client, alice, [SENTIMENT_STEP], {"input": "x"})

    for method, path in [
        ("GET", f"/workflows/{workflow_id}/status"),
        ("POST", f"/workflows/{workflow_id}/pause"),
        ("POST", f"/workflows/{workflow_id}/cancel"),
        ("GET", f"/state/{workflow_id}"),
        ("GET", f"/state/{workflow_id}/checkpoints"),
    ]:
        response = await client.request(
            method, path, headers=bob.headers, params={"executionId": execution_id}
        )
        assert response.status_code == 404, (path, response.text)
    forbidden_run = await client.post(
        f"/workflows/{workflow_id}/execute", headers=bob.headers, json={"inputs": {"input": "x"}}
    )
    assert forbidden_run.status_code == 404
    # The admin sees everyone's executions.
    assert (await get_status(client, admin, workflow_id, execution_id))["id"] == execution_id


async def test_running_execution_keeps_its_definition_when_the_workflow_changes(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI
) -> None:
    fake_openai.latency = 0.2
    steps = [llm_step("a", "v1 {{x}}", "out")]
    workflow_id, execution_id = await launch(client, admin, steps, {"x": "1"})

    edited = {"name": "test-workflow", "steps": [llm_step("a", "v2 {{x}}", "out")]}
    response = await client.put(f"/workflows/{workflow_id}", headers=admin.headers, json=edited)
    assert response.status_code == 200, response.text
    final = await wait_for(client, admin, workflow_id, execution_id)

    assert final["context"]["outputs"] == {"out": "echo: v1 1"}


async def test_execution_events_are_audited(client: httpx.AsyncClient, admin: Session) -> None:
    workflow_id, execution_id = await launch(client, admin, [SENTIMENT_STEP], {"input": "x"})
    await wait_for(client, admin, workflow_id, execution_id)

    # The end and its finish event commit together: once the status reads as ended, the
    # event is there, no waiting.
    response = await client.get(
        "/audit/events",
        headers=admin.headers,
        params={"event_type": "workflow_execution", "resource_id": execution_id},
    )
    assert response.status_code == 200, response.text
    actions = sorted(event["action"] for event in response.json()["events"])
    assert actions == ["finish", "start"]


async def test_an_execution_ends_only_together_with_its_finish_event(
    client: httpx.AsyncClient,
    admin: Session,
    fake_openai: FakeOpenAI,
    owner_database_url: str,
) -> None:
    """The end and its finish event are one transaction, and a read of the trail links what
    is pending first: while the audit chain's head is locked by someone else, the run still
    ends (writers do not wait for the head), and a read of the trail started after the end
    waits for the head and then shows the finish event; the execution is never seen ended
    without its event."""
    workflow_id = await create_workflow(client, admin, [SENTIMENT_STEP])
    fake_openai.hold()
    execution_id = await start_execution(client, admin, workflow_id, {"input": "x"})
    await wait_held(fake_openai)
    async with await psycopg.AsyncConnection.connect(owner_database_url) as holder:
        await holder.execute("SELECT 1 FROM audit_chain_head FOR UPDATE")  # a transaction
        fake_openai.release()
        ended = await wait_for(client, admin, workflow_id, execution_id)
        reading = asyncio.ensure_future(
            client.get(
                "/audit/events",
                headers=admin.headers,
                params={"event_type": "workflow_execution", "resource_id": execution_id},
            )
        )
        # Until the read waits for the head, then let the head go.
        await wait_until_async(lambda: _lock_waited_for(holder))
        assert not reading.done()
        await holder.rollback()
        response = await reading
    assert ended["status"] == "completed"
    assert response.status_code == 200, response.text
    assert sorted(event["action"] for event in response.json()["events"]) == ["finish", "start"]


async def _lock_waited_for(conn: psycopg.AsyncConnection[Any]) -> bool:
    cur = await conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted")
    row = await cur.fetchone()
    return row is not None and row[0] > 0


async def wait_until_async(predicate: Callable[[], Awaitable[bool]]) -> None:
    deadline = asyncio.get_running_loop().time() + 30.0
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_another_users_checkpoint_cannot_be_restored(
    client: httpx.AsyncClient, create_user: CreateUser, fake_openai: FakeOpenAI
) -> None:
    alice = await create_user("alice", roles=["developer"])
    mallory = await create_user("mallory", roles=["developer"])
    alices_workflow = await create_workflow(client, alice, [llm_step("a", "A:{{x}}", "out")])
    execution_id = await start_execution(client, alice, alices_workflow, {"x": "1"})
    assert (await wait_for(client, alice, alices_workflow, execution_id))["status"] == "completed"
    listed = await client.get(
        f"/state/{alices_workflow}/checkpoints",
        headers=alice.headers,
        params={"executionId": execution_id},
    )
    checkpoint_id = listed.json()["checkpoints"][0]["id"]
    mallorys_workflow = await create_workflow(client, mallory, [llm_step("a", "A:{{x}}", "out")])
    calls_before = len(fake_openai.requests)

    for workflow_id in (alices_workflow, mallorys_workflow):
        refused = await client.post(
            f"/state/{workflow_id}/restore",
            headers=mallory.headers,
            json={"checkpointId": checkpoint_id},
        )
        assert refused.status_code == 404, workflow_id
        assert refused.json()["code"] == "not_found"

    after = await get_status(client, alice, alices_workflow, execution_id)
    assert after["status"] == "completed"
    assert len(fake_openai.requests) == calls_before
    # The owner may restore it: the 404s above are about ownership, nothing else.
    own = await client.post(
        f"/state/{alices_workflow}/restore",
        headers=alice.headers,
        json={"checkpointId": checkpoint_id},
    )
    assert own.status_code == 200, own.text


async def test_a_failure_inside_a_parallel_names_the_step_that_failed(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI
) -> None:
    workflow_id = await create_workflow(
        client,
        admin,
        [
            llm_step("good", "fine {{name}}", "ok"),
            llm_step("bad", "hi {{name}}", "reply", model="no-such-model"),
            llm_step("after", "{{good.ok}} {{bad.reply}}", "end", depends_on=["good", "bad"]),
        ],
    )
    fake_openai.models = frozenset({"gpt-4"})

    execution_id = await start_execution(client, admin, workflow_id, {"name": "bob"})
    final = await wait_for(client, admin, workflow_id, execution_id)

    assert final["status"] == "failed"
    assert final["error"]["type"] == "ProviderBadRequest"
    assert final["error"]["step_id"] == "bad"
    assert final["steps"]["bad"]["error"]["type"] == "ProviderBadRequest"
