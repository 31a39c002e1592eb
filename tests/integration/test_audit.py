"""The tamper-evident audit trail through the API and at the database."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from llm_orchestrator.clock import utcnow


async def events(client, admin, **params):
    response = await client.get("/audit/events", headers=admin.headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_logins_succeeding_and_failing_are_recorded(client, admin):
    await client.post("/auth/login", json={"username": "admin", "password": "wrong-password"})

    body = await events(client, admin, event_type="authentication")

    results = [(e["action"], e["result"]) for e in body["events"]]
    assert ("Login", "failure") in results and ("Login", "success") in results
    event = body["events"][0]
    assert event["id"].startswith("evt-")
    assert event["event_hash"].startswith("hmac-sha256:")
    assert event["ip_address"] == "203.0.113.7"
    assert "wrong-password" not in str(body)


async def test_key_and_user_management_are_recorded(client, admin, create_user):
    created = (
        await client.post(
            "/auth/keys", headers=admin.headers, json={"name": "k", "scopes": ["admin"]}
        )
    ).json()
    await client.delete(f"/auth/keys/{created['id']}", headers=admin.headers)
    user = await create_user("audited")

    keys = await events(client, admin, event_type="api_key", resource_id=created["id"])
    users = await events(client, admin, event_type="user_management")

    assert [e["action"] for e in keys["events"]] == ["Revoke API key", "Create API key"]
    assert created["key"] not in str(keys)
    assert users["events"][0]["resource_id"] == user.user_id
    assert users["events"][0]["user_id"] == admin.user_id


async def test_401_and_403_refusals_are_recorded(client, create_user, admin):
    dev = await create_user("nosy")
    await client.get("/admin/users", headers=dev.headers)
    await client.get("/auth/keys")

    denied = await events(client, admin, event_type="access_denied")

    statuses = sorted(e["details"]["status"] for e in denied["events"])
    assert statuses == [401, 403]
    forbidden = next(e for e in denied["events"] if e["details"]["status"] == 403)
    assert forbidden["user_id"] == dev.user_id
    assert forbidden["action"] == "GET /api/v1/admin/users"


async def test_filters_and_time_range(client, admin):
    body = await events(client, admin, result="success", start_time="2000-01-01T00:00:00Z")
    assert body["total"] >= 1 and all(e["result"] == "success" for e in body["events"])
    future = await events(client, admin, start_time="2999-01-01T00:00:00Z")
    assert future["total"] == 0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"start_time": "yesterday"}, "start_time"),
        ({"end_time": "2025-13-01T00:00:00Z"}, "end_time"),
        ({"start_time": "2025-11-14T10:00:00"}, "start_time"),
        ({"start_time": "1700000000"}, "start_time"),
        ({"end_time": "0.5"}, "end_time"),
        ({"end_time": "2025-02-30T00:00:00Z"}, "end_time"),
        ({"result": "maybe"}, "result"),
        ({"start_time": "2025-11-15T00:00:00Z", "end_time": "2025-11-14T00:00:00Z"}, "start_time"),
    ],
)
async def test_bad_filters_are_400(client, admin, params, field):
    response = await client.get("/audit/events", headers=admin.headers, params=params)
    assert response.status_code == 400
    assert response.json()["details"]["errors"][0]["field"] == field


async def test_single_event_and_unknown_event(client, admin):
    first = (await events(client, admin))["events"][0]
    one = await client.get(f"/audit/events/{first['id']}", headers=admin.headers)
    assert one.status_code == 200 and one.json() == first
    missing = await client.get("/audit/events/evt-nope", headers=admin.headers)
    assert missing.status_code == 404


async def test_audit_needs_admin(client, create_user):
    dev = await create_user("dev")
    assert (await client.get("/audit/events", headers=dev.headers)).status_code == 403
    assert (await client.get("/audit/verify", headers=dev.headers)).status_code == 403


async def test_concurrent_writers_produce_one_unbroken_chain(client, admin, server):
    await asyncio.gather(
        *[server.runtime.audit.record(event_type="test", action=f"write {i}") for i in range(100)]
    )

    verification = (await client.get("/audit/verify", headers=admin.headers)).json()

    assert verification["valid"] is True
    assert verification["first_invalid_event_id"] is None
    async with server.runtime.db.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n, count(DISTINCT prev_hash) AS prevs, max(seq) AS top"
            " FROM audit_events"
        )
        row = await cur.fetchone()
    assert row["n"] == row["prevs"] == row["top"] == verification["checked"]


async def test_update_and_delete_are_refused_by_the_database(server):
    await server.runtime.audit.record(event_type="test", action="protected")
    async with server.runtime.db.connection() as conn:
        for statement in (
            "UPDATE audit_events SET action = 'x'",
            "DELETE FROM audit_events",
            "TRUNCATE audit_events",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                await conn.execute(statement)


async def test_verify_names_the_first_altered_event(
    client, admin, server, create_user, owner_database_url
):
    await create_user("someone")
    listing = (await events(client, admin, limit=100))["events"]
    chain = sorted(listing, key=lambda e: e["timestamp"])
    victim = chain[1]
    # Only the owner can disable the trigger; the app's role owns nothing.
    with psycopg.connect(owner_database_url) as conn:
        conn.execute("ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_delete")
        conn.execute("UPDATE audit_events SET result = 'failure' WHERE id = %s", (victim["id"],))
        conn.execute("ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update_delete")

    verification = (await client.get("/audit/verify", headers=admin.headers)).json()

    assert verification["valid"] is False
    assert verification["first_invalid_event_id"] == victim["id"]


async def test_end_time_keeps_events_up_to_it_and_start_time_from_it(client, admin, server):
    for i in range(3):
        await server.runtime.audit.record(event_type="test", action=f"before {i}")
    boundary = utcnow()
    for i in range(2):
        await server.runtime.audit.record(event_type="test", action=f"after {i}")

    until = await events(client, admin, event_type="test", end_time=boundary.isoformat())
    since = await events(client, admin, event_type="test", start_time=boundary.isoformat())

    assert [e["action"] for e in until["events"]] == ["before 2", "before 1", "before 0"]
    assert until["total"] == 3
    assert [e["action"] for e in since["events"]] == ["after 1", "after 0"]


async def test_user_id_filter_returns_that_users_events_only(client, admin, create_user):
    dev = await create_user("watched")
    await client.get("/admin/users", headers=dev.headers)  # a 403, recorded under the dev

    mine = await events(client, admin, user_id=dev.user_id)

    assert mine["total"] == len(mine["events"]) >= 2
    assert {e["user_id"] for e in mine["events"]} == {dev.user_id}
    kinds = {(e["event_type"], e["result"]) for e in mine["events"]}
    assert ("authentication", "success") in kinds and ("access_denied", "failure") in kinds
    everyone = await events(client, admin, limit=100)
    assert everyone["total"] > mine["total"]


async def test_events_paginate_newest_first_without_overlap(client, admin, server):
    for i in range(5):
        await server.runtime.audit.record(event_type="test", action=f"write {i}")

    pages = [await events(client, admin, event_type="test", limit=2, offset=o) for o in (0, 2, 4)]

    assert [[e["action"] for e in page["events"]] for page in pages] == [
        ["write 4", "write 3"],
        ["write 2", "write 1"],
        ["write 0"],
    ]
    assert {(page["total"], page["limit"], page["offset"]) for page in pages} == {
        (5, 2, 0),
        (5, 2, 2),
        (5, 2, 4),
    }


async def test_updating_a_workflow_is_recorded(client, admin):
    definition = {
        "name": "audited",
        "version": "1.0",
        "steps": [
            {
                "id": "a",
                "type": "llm",
                "provider": "openai",
                "model": "gpt-4",
                "prompt": "{{x}}",
                "output": ["y"],
            }
        ],
    }
    created = await client.post("/workflows", headers=admin.headers, json=definition)
    workflow_id = created.json()["id"]
    updated = await client.put(
        f"/workflows/{workflow_id}",
        headers=admin.headers,
        json={**definition, "name": "audited-v2", "version": "2.0"},
    )
    assert updated.status_code == 200

    trail = await events(client, admin, event_type="workflow_management", resource_id=workflow_id)

    assert [e["action"] for e in trail["events"]] == ["Update workflow", "Create workflow"]
    update = trail["events"][0]
    assert update["user_id"] == admin.user_id
    assert update["resource_type"] == "workflow" and update["result"] == "success"
    assert update["details"]["name"] == "audited-v2"
    assert update["details"]["version"] == "2.0"
