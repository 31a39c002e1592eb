"""Workflow CRUD, validation through the API, ownership and the compiled state machine."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from psycopg.types.json import Jsonb

from tests.samples import RAG_WORKFLOW

SENTIMENT = {
    "name": "sentiment-analyzer",
    "version": "1.0",
    "description": "Analyzes sentiment",
    "steps": [
        {
            "id": "analyze",
            "type": "llm",
            "provider": "openai",
            "model": "gpt-4",
            "prompt": "Analyze sentiment: {{input}}",
            "output": ["sentiment"],
        }
    ],
    "timeout_seconds": 300,
}

RAG = RAG_WORKFLOW


async def create(client, session, body=SENTIMENT):
    response = await client.post("/workflows", headers=session.headers, json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def test_create_returns_the_documented_workflow(client, admin):
    body = await create(client, admin)

    uuid.UUID(body["id"])
    assert body["name"] == "sentiment-analyzer" and body["version"] == "1.0"
    assert body["description"] == "Analyzes sentiment"
    assert body["timeout_seconds"] == 300
    assert body["created_by"] == admin.user_id
    assert body["created_at"] == body["updated_at"]
    assert body["steps"][0]["prompt"] == "Analyze sentiment: {{input}}"
    assert body["inputs"] == ["input"]


async def test_rag_workflow_from_the_spec_is_accepted(client, admin):
    body = await create(client, admin, RAG)
    assert body["inputs"] == ["query"]
    assert [s["id"] for s in body["steps"]] == ["embed_query", "search_docs", "generate_answer"]


async def test_get_put_and_delete(client, admin):
    created = await create(client, admin)
    wid = created["id"]

    fetched = await client.get(f"/workflows/{wid}", headers=admin.headers)
    assert fetched.status_code == 200 and fetched.json() == created

    changed = {**SENTIMENT, "version": "2.0", "description": "v2"}
    updated = await client.put(f"/workflows/{wid}", headers=admin.headers, json=changed)
    assert updated.status_code == 200
    assert updated.json()["version"] == "2.0"
    assert updated.json()["updated_at"] >= created["updated_at"]
    assert updated.json()["created_at"] == created["created_at"]

    deleted = await client.delete(f"/workflows/{wid}", headers=admin.headers)
    assert deleted.status_code == 204
    assert (await client.get(f"/workflows/{wid}", headers=admin.headers)).status_code == 404


async def test_list_filters_by_partial_name_and_version_and_paginates(client, admin):
    await create(client, admin)
    await create(client, admin, {**SENTIMENT, "name": "summarizer", "version": "2.0"})
    await create(client, admin, RAG)

    by_name = await client.get("/workflows?name=SENTI", headers=admin.headers)
    by_version = await client.get("/workflows?version=2.0", headers=admin.headers)
    paged = await client.get("/workflows?limit=2&offset=2", headers=admin.headers)

    assert [w["name"] for w in by_name.json()["workflows"]] == ["sentiment-analyzer"]
    assert [w["name"] for w in by_version.json()["workflows"]] == ["summarizer"]
    assert paged.json()["total"] == 3 and len(paged.json()["workflows"]) == 1
    assert set(paged.json()["workflows"][0]) >= {"id", "name", "version", "created_at"}


async def test_name_filter_treats_wildcards_literally(client, admin):
    await create(client, admin)
    response = await client.get("/workflows?name=%25", headers=admin.headers)
    assert response.json()["total"] == 0


async def test_users_see_only_their_own_workflows_and_admin_sees_all(client, admin, create_user):
    alice = await create_user("alice")
    bob = await create_user("bob")
    mine = await create(client, alice)

    assert (await client.get("/workflows", headers=bob.headers)).json()["total"] == 0
    for method in ("get", "delete"):
        response = await getattr(client, method)(f"/workflows/{mine['id']}", headers=bob.headers)
        assert response.status_code == 404, method
    put = await client.put(f"/workflows/{mine['id']}", headers=bob.headers, json={"bad": 1})
    assert put.status_code == 404
    state = await client.get(f"/workflows/{mine['id']}/state-machine", headers=bob.headers)
    assert state.status_code == 404
    assert (await client.get("/workflows", headers=admin.headers)).json()["total"] == 1
    assert (await client.get(f"/workflows/{mine['id']}", headers=admin.headers)).status_code == 200


async def test_viewers_can_read_but_not_write(client, admin, create_user):
    viewer = await create_user("viewer", roles=["viewer"])
    response = await client.post("/workflows", headers=viewer.headers, json=SENTIMENT)
    assert response.status_code == 403
    assert (await client.get("/workflows", headers=viewer.headers)).status_code == 200


async def test_malformed_ids_are_404(client, admin):
    response = await client.get("/workflows/not-a-uuid", headers=admin.headers)
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("mutate", "field", "fragment"),
    [
        (lambda d: d.update(steps=[]), "steps", ""),
        (lambda d: d["steps"].append(dict(d["steps"][0])), "steps[1].id", "duplicate"),
        (lambda d: d["steps"][0].update(depends_on=["ghost"]), "steps[0].depends_on[0]", "ghost"),
        (lambda d: d["steps"][0].update(provider="mystery"), "steps[0].provider", "openai"),
        (lambda d: d["steps"][0].update(type="teleport"), "steps[0].type", "llm"),
        (lambda d: d["steps"][0].update(temperature=7), "steps[0].temperature", ""),
        (lambda d: d.update(colour="blue"), "colour", ""),
        (lambda d: d["steps"][0].update(prompt="p" * 100_001), "steps[0].prompt", "100000"),
        (lambda d: d.update(steps=d["steps"] * 1001), "steps", "at most 1000"),
        (
            lambda d: d["steps"].append(
                {**d["steps"][0], "id": "again", "prompt": "{{sentiment}}", "output": ["x"]}
            ),
            "steps[1].prompt",
            "not an ancestor",
        ),
        (
            lambda d: d["steps"].append({**d["steps"][0], "id": "twin"}),
            "steps[1].output[0]",
            "already produced",
        ),
        (
            lambda d: d.update(
                steps=[
                    {
                        "id": "s",
                        "type": "vector_search",
                        "database": "mongo",
                        "index": "i",
                        "query": "q",
                    }
                ]
            ),
            "steps[0].database",
            "pgvector",
        ),
    ],
)
async def test_invalid_definitions_are_400_with_field_paths(client, admin, mutate, field, fragment):
    body = json.loads(json.dumps(SENTIMENT))
    mutate(body)

    response = await client.post("/workflows", headers=admin.headers, json=body)

    assert response.status_code == 400
    errors = response.json()["details"]["errors"]
    matching = [e for e in errors if e["field"] == field]
    assert matching, errors
    assert fragment.lower() in matching[0]["message"].lower()


async def test_a_cycle_is_named(client, admin):
    body = {
        "name": "loop",
        "steps": [
            {
                "id": "a",
                "type": "llm",
                "provider": "openai",
                "model": "m",
                "prompt": "x",
                "depends_on": ["b"],
            },
            {
                "id": "b",
                "type": "llm",
                "provider": "openai",
                "model": "m",
                "prompt": "y",
                "depends_on": ["a"],
            },
        ],
    }
    response = await client.post("/workflows", headers=admin.headers, json=body)
    assert response.status_code == 400
    assert "a -> b -> a" in str(response.json()["details"]["errors"]) or "b -> a -> b" in str(
        response.json()["details"]["errors"]
    )


async def test_update_with_invalid_body_changes_nothing(client, admin):
    created = await create(client, admin)
    bad = await client.put(
        f"/workflows/{created['id']}", headers=admin.headers, json={**SENTIMENT, "steps": []}
    )
    assert bad.status_code == 400
    after = (await client.get(f"/workflows/{created['id']}", headers=admin.headers)).json()
    assert after == created


async def test_state_machine_is_the_compiled_asl(client, admin):
    created = await create(client, admin, RAG)

    response = await client.get(f"/workflows/{created['id']}/state-machine", headers=admin.headers)

    assert response.status_code == 200
    definition = response.json()["definition"]
    assert definition["StartAt"] == "embed_query"
    assert definition["TimeoutSeconds"] == 3600
    task = definition["States"]["embed_query"]
    assert task["ResultPath"] is None
    assert task["Parameters"]["Payload"]["step_id"] == "embed_query"


async def test_delete_is_409_while_an_execution_is_active(client, admin, server):
    created = await create(client, admin)
    async with server.runtime.db.connection() as conn:
        await conn.execute(
            "INSERT INTO executions (id, workflow_id, owner_id, status, inputs, definition,"
            " state_machine, timeout_seconds) VALUES (%s, %s, %s, 'running', %s, %s, %s, 60)",
            ("exec-test", created["id"], admin.user_id, Jsonb({}), Jsonb({}), Jsonb({})),
        )

    response = await client.delete(f"/workflows/{created['id']}", headers=admin.headers)

    assert response.status_code == 409
    assert response.json()["code"] == "conflict"
    assert (
        await client.get(f"/workflows/{created['id']}", headers=admin.headers)
    ).status_code == 200


async def test_workflow_changes_are_audited(client, admin):
    created = await create(client, admin)
    await client.delete(f"/workflows/{created['id']}", headers=admin.headers)
    events = (
        await client.get(
            "/audit/events",
            headers=admin.headers,
            params={"resource_type": "workflow", "resource_id": created["id"]},
        )
    ).json()["events"]
    assert [e["action"] for e in events] == ["Delete workflow", "Create workflow"]


def test_llmo_compile_prints_the_state_machine(tmp_path):
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps(RAG))

    result = subprocess.run(
        [sys.executable, "-m", "llm_orchestrator.cli", "compile", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )

    asl = json.loads(result.stdout)
    assert asl["StartAt"] == "embed_query"


def test_llmo_compile_reports_validation_errors(tmp_path):
    path = tmp_path / "workflow.json"
    path.write_text(json.dumps({**SENTIMENT, "steps": []}))

    result = subprocess.run(
        [sys.executable, "-m", "llm_orchestrator.cli", "compile", str(path)],
        capture_output=True,
        text=True,
    )

    assert result.returncode == 2
    assert "steps" in result.stderr
