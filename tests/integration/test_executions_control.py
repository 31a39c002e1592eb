"""Pause, resume, cancel, checkpoints and restore over HTTP."""

from __future__ import annotations

import json

import httpx
import pytest

from llm_orchestrator.server import LocalServer
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import Session
from tests.integration.execution_support import (
    checkpoints,
    control,
    create_workflow,
    get_status,
    launch,
    launch_held,
    llm_step,
    prompts,
    wait_for,
    wait_held,
    wait_parked,
    wait_run_over,
    wait_step,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("fake_openai")
"""Every test here runs on the fake OpenAI server (conftest's ``server`` points at it)."""


CHAIN = [
    llm_step("a", "a {{x}}", "out_a"),
    llm_step("b", "b {{out_a}}", "out_b", depends_on=["a"]),
    llm_step("c", "c {{out_b}}", "out_c", depends_on=["b"]),
]


async def test_pause_holds_and_resume_finishes(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    workflow_id, execution_id = await launch_held(
        client, admin, fake_openai, CHAIN, {"x": "1"}
    )  # step a is inside its provider call

    paused = await control(client, admin, "pause", workflow_id, execution_id)
    fake_openai.release()

    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused"
    # The running step finishes and checkpoints; the next one parks instead of starting.
    await wait_step(client, admin, workflow_id, execution_id, "a", "completed")
    await wait_parked(server, execution_id, "b")
    held = await get_status(client, admin, workflow_id, execution_id)
    assert held["status"] == "paused"
    assert held["steps"]["b"]["status"] == "pending"
    assert prompts(fake_openai) == ["a 1"]

    resumed = await control(client, admin, "resume", workflow_id, execution_id)

    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["status"] == "running"
    final = await wait_for(client, admin, workflow_id, execution_id)
    assert final["status"] == "completed"
    assert prompts(fake_openai) == ["a 1", "b echo: a 1", "c echo: b echo: a 1"]


async def test_cancel_stops_the_execution(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    workflow_id, execution_id = await launch_held(client, admin, fake_openai, CHAIN, {"x": "1"})

    cancelled = await control(client, admin, "cancel", workflow_id, execution_id)

    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert body["status"] == "cancelled"
    assert body["completed_at"] is not None
    assert body["error"]["type"] == "WorkflowCancelled"
    # The provider answers the cancelled step after all; once the run is over, nothing
    # more can start, so what it left behind is final.
    fake_openai.release()
    await wait_run_over(server)
    # The fake records a request once it has answered it, which may be after the run is
    # over: wait for that rather than read its log while the answer is still going out.
    await wait_until(lambda: fake_openai.in_flight == 0)
    final = await get_status(client, admin, workflow_id, execution_id)
    assert final["status"] == "cancelled"
    assert [final["steps"][s]["status"] for s in ("b", "c")] == ["pending", "pending"]
    assert prompts(fake_openai) == ["a 1"]


async def test_cancel_releases_a_paused_execution(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    workflow_id, execution_id = await launch_held(client, admin, fake_openai, CHAIN, {"x": "1"})
    assert (await control(client, admin, "pause", workflow_id, execution_id)).status_code == 200
    fake_openai.release()
    await wait_parked(server, execution_id, "b")

    cancelled = await control(client, admin, "cancel", workflow_id, execution_id)

    assert cancelled.json()["status"] == "cancelled"
    await wait_run_over(server)  # the parked run was released and has ended
    assert (await get_status(client, admin, workflow_id, execution_id))["status"] == "cancelled"
    assert prompts(fake_openai) == ["a 1"]


async def test_invalid_transitions_are_conflicts(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI
) -> None:
    fake_openai.latency = 0.2
    workflow_id, execution_id = await launch(
        client, admin, [llm_step("a", "a {{x}}", "out")], {"x": "1"}
    )

    running_resume = await control(client, admin, "resume", workflow_id, execution_id)
    assert running_resume.status_code == 409
    assert running_resume.json()["code"] == "conflict"

    await wait_for(client, admin, workflow_id, execution_id)
    for action in ("pause", "resume", "cancel"):
        response = await control(client, admin, action, workflow_id, execution_id)
        assert response.status_code == 409, (action, response.text)
        assert "completed" in response.json()["message"]


async def test_checkpoints_after_every_step_and_on_demand(
    client: httpx.AsyncClient, admin: Session
) -> None:
    workflow_id = await create_workflow(client, admin, CHAIN)
    # Common Workflow 3: no "async" given.
    response = await client.post(
        f"/workflows/{workflow_id}/execute", headers=admin.headers, json={"inputs": {"x": "1"}}
    )
    execution_id = response.json()["execution_id"]
    await wait_for(client, admin, workflow_id, execution_id)

    listed = await client.get(
        f"/state/{workflow_id}/checkpoints",
        headers=admin.headers,
        params={"executionId": execution_id},
    )

    assert listed.status_code == 200, listed.text
    page = listed.json()
    assert (page["total"], page["limit"], page["offset"]) == (3, 20, 0)
    assert [c["step_id"] for c in page["checkpoints"]] == ["a", "b", "c"]
    first = page["checkpoints"][0]
    assert first["id"].startswith("ckpt-")
    assert first["workflow_state_id"] == execution_id
    assert first["timestamp"].endswith("Z")
    assert first["snapshot"] == {"inputs": {"x": "1"}, "steps": {"a": {"out_a": "echo: a 1"}}}

    created = await client.post(
        f"/state/{workflow_id}/checkpoints",
        headers=admin.headers,
        json={"executionId": execution_id, "stepId": "b"},
    )

    assert created.status_code == 201, created.text
    assert created.json()["step_id"] == "b"
    assert set(created.json()["snapshot"]["steps"]) == {"a", "b", "c"}
    unknown = await client.post(
        f"/state/{workflow_id}/checkpoints",
        headers=admin.headers,
        json={"executionId": execution_id, "stepId": "zzz"},
    )
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "not_found"
    malformed = await client.post(
        f"/state/{workflow_id}/checkpoints",
        headers=admin.headers,
        json={"executionId": execution_id, "stepId": ""},
    )
    assert malformed.status_code == 400
    assert malformed.json()["details"]["errors"][0]["field"] == "stepId"
    state = await client.get(
        f"/state/{workflow_id}", headers=admin.headers, params={"executionId": execution_id}
    )
    assert state.json() == await get_status(client, admin, workflow_id, execution_id)


async def test_restore_reruns_only_the_steps_after_the_checkpoint(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI
) -> None:
    workflow_id, execution_id = await launch(client, admin, CHAIN, {"x": "1"})
    await wait_for(client, admin, workflow_id, execution_id)
    listed = await client.get(
        f"/state/{workflow_id}/checkpoints",
        headers=admin.headers,
        params={"executionId": execution_id},
    )
    after_a = listed.json()["checkpoints"][0]
    assert after_a["step_id"] == "a"
    fake_openai.reset()

    restored = await client.post(
        f"/state/{workflow_id}/restore",
        headers=admin.headers,
        json={"checkpointId": after_a["id"]},
    )

    assert restored.status_code == 200, restored.text
    body = restored.json()
    assert body["id"] == execution_id
    assert body["status"] in ("pending", "running")
    assert body["steps"]["a"]["status"] == "completed"
    final = await wait_for(client, admin, workflow_id, execution_id)
    assert final["status"] == "completed"
    assert prompts(fake_openai) == ["b echo: a 1", "c echo: b echo: a 1"]
    events = await client.get(
        "/audit/events",
        headers=admin.headers,
        params={"event_type": "workflow_execution", "resource_id": execution_id},
    )
    assert "restore" in [e["action"] for e in events.json()["events"]]


def _completion(text: str) -> str:
    return json.dumps(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "gpt-4",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    )


async def test_every_checkpoint_shows_its_whole_snapshot_across_restores(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    workflow_id, execution_id = await launch(client, admin, CHAIN, {"x": "1"})
    await wait_for(client, admin, workflow_id, execution_id)
    a = {"out_a": "echo: a 1"}
    b = {"out_b": "echo: b echo: a 1"}
    c = {"out_c": "echo: c echo: b echo: a 1"}
    first_run = await checkpoints(client, admin, workflow_id, execution_id)
    assert [(k["step_id"], k["snapshot"]) for k in first_run] == [
        ("a", {"inputs": {"x": "1"}, "steps": {"a": a}}),
        ("b", {"inputs": {"x": "1"}, "steps": {"a": a, "b": b}}),
        ("c", {"inputs": {"x": "1"}, "steps": {"a": a, "b": b, "c": c}}),
    ]
    fake_openai.reset()
    fake_openai.reply_next(_completion("B"))  # the rerun of b answers differently

    restored = await client.post(
        f"/state/{workflow_id}/restore",
        headers=admin.headers,
        json={"checkpointId": first_run[0]["id"]},
    )
    assert restored.status_code == 200, restored.text
    await wait_for(client, admin, workflow_id, execution_id)
    second_run = (await checkpoints(client, admin, workflow_id, execution_id))[3:]

    # The new run's checkpoints extend the one it was restored to, not the old run's.
    c2 = {"out_c": "echo: c B"}
    assert [(k["step_id"], k["snapshot"]) for k in second_run] == [
        ("b", {"inputs": {"x": "1"}, "steps": {"a": a, "b": {"out_b": "B"}}}),
        ("c", {"inputs": {"x": "1"}, "steps": {"a": a, "b": {"out_b": "B"}, "c": c2}}),
    ]
    # Restoring to one of them restores its whole snapshot: only c runs again.
    fake_openai.reset()
    again = await client.post(
        f"/state/{workflow_id}/restore",
        headers=admin.headers,
        json={"checkpointId": second_run[0]["id"]},
    )
    assert again.status_code == 200, again.text
    final = await wait_for(client, admin, workflow_id, execution_id)
    assert final["status"] == "completed"
    assert prompts(fake_openai) == ["c B"]
    assert final["context"]["outputs"] == {**a, "out_b": "B", "out_c": "echo: c B"}
    # Stored, an automatic checkpoint after a run's first keeps its own step only.
    async with server.runtime.db.connection() as conn:
        cur = await conn.execute(
            "SELECT step_id, snapshot FROM checkpoint_rows WHERE execution_id = %s"
            " AND parent_id IS NOT NULL ORDER BY created_at",
            (execution_id,),
        )
        stored = [
            (row["step_id"], sorted(row["snapshot"]["steps"])) for row in await cur.fetchall()
        ]
    assert stored == [("b", ["b"]), ("c", ["c"]), ("b", ["b"]), ("c", ["c"]), ("c", ["c"])]


async def test_restore_of_a_running_execution_is_a_conflict(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI
) -> None:
    fake_openai.hold(lambda body: body["messages"][-1]["content"].startswith("b "))
    workflow_id, execution_id = await launch(client, admin, CHAIN, {"x": "1"})
    await wait_held(fake_openai)  # a has completed and checkpointed; b is running
    listed = await client.get(
        f"/state/{workflow_id}/checkpoints",
        headers=admin.headers,
        params={"executionId": execution_id},
    )

    response = await client.post(
        f"/state/{workflow_id}/restore",
        headers=admin.headers,
        json={"checkpointId": listed.json()["checkpoints"][0]["id"]},
    )
    fake_openai.release()

    assert response.status_code == 409
    missing = await client.post(
        f"/state/{workflow_id}/restore", headers=admin.headers, json={"checkpointId": "ckpt-x"}
    )
    assert missing.status_code == 404
    assert (await wait_for(client, admin, workflow_id, execution_id))["status"] == "completed"


async def test_timeout_override_times_the_execution_out(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI
) -> None:
    fake_openai.hold()  # the provider never answers in time
    workflow_id = await create_workflow(client, admin, [llm_step("a", "a {{x}}", "out")])

    response = await client.post(
        f"/workflows/{workflow_id}/execute",
        headers=admin.headers,
        json={"inputs": {"x": "1"}, "async": False, "timeout_override": 1},
    )
    fake_openai.release()

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "timed_out"
    assert body["error"]["type"] == "States.Timeout"
