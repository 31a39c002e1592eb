"""Triggers through the API: schedules fired by the local scheduler, events posted to
POST /events, ownership, and triggers that stop when their creator may no longer run them."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from llm_orchestrator.server import LocalServer
from llm_orchestrator.triggers.scheduler import LocalScheduler
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


SUMMARY = [llm_step("summary", "Summarise: {{text}}", "summary")]


async def make_workflow(client: httpx.AsyncClient, session: Session) -> str:
    return await create_workflow(client, session, SUMMARY)


async def add_trigger(
    client: httpx.AsyncClient, session: Session, workflow_id: str, body: dict[str, Any]
) -> httpx.Response:
    return await client.post(
        f"/workflows/{workflow_id}/triggers", headers=session.headers, json=body
    )


async def list_triggers(
    client: httpx.AsyncClient, session: Session, workflow_id: str, **params: Any
) -> dict[str, Any]:
    response = await client.get(
        f"/workflows/{workflow_id}/triggers", headers=session.headers, params=params
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def post_event(client: httpx.AsyncClient, session: Session, **event: Any) -> httpx.Response:
    return await client.post("/events", headers=session.headers, json=event)


class FakeClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=max(seconds, 0.001))
        await asyncio.sleep(0)


def field_errors(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    return {e["field"]: e["message"] for e in body["details"]["errors"]}


def run_sql(database_url: str, sql: str, *params: Any) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql, params)  # type: ignore[arg-type]


# -- create / list / delete ------------------------------------------------------------------


async def test_a_schedule_trigger_is_created_listed_and_deleted(
    client: httpx.AsyncClient, admin: Session
) -> None:
    workflow_id = await make_workflow(client, admin)

    created = await add_trigger(
        client,
        admin,
        workflow_id,
        {"type": "schedule", "schedule": "rate(5 minutes)", "inputs": {"text": "hi"}},
    )

    assert created.status_code == 201, created.text
    trigger = created.json()
    assert trigger["id"].startswith("trg-")
    assert trigger["workflow_id"] == workflow_id
    assert trigger["type"] == "schedule" and trigger["schedule"] == "rate(5 minutes)"
    assert trigger["inputs"] == {"text": "hi"}
    assert trigger["enabled"] is True and trigger["status"] == "active"
    assert trigger["created_by"] == admin.user_id
    fires_in = datetime.fromisoformat(trigger["next_fire_at"]) - datetime.fromisoformat(
        trigger["created_at"]
    )
    assert fires_in == timedelta(minutes=5)
    listed = await list_triggers(client, admin, workflow_id)
    assert listed["total"] == 1 and listed["limit"] == 20 and listed["offset"] == 0
    assert listed["triggers"] == [trigger]

    deleted = await client.delete(
        f"/workflows/{workflow_id}/triggers/{trigger['id']}", headers=admin.headers
    )
    assert deleted.status_code == 204
    assert (await list_triggers(client, admin, workflow_id))["total"] == 0
    again = await client.delete(
        f"/workflows/{workflow_id}/triggers/{trigger['id']}", headers=admin.headers
    )
    assert again.status_code == 404 and again.json()["code"] == "not_found"


async def test_triggers_list_pages_like_every_list(
    client: httpx.AsyncClient, admin: Session
) -> None:
    workflow_id = await make_workflow(client, admin)
    for minutes in (2, 3, 4):
        body = {"type": "schedule", "schedule": f"rate({minutes} minutes)", "inputs": {"text": "x"}}
        assert (await add_trigger(client, admin, workflow_id, body)).status_code == 201

    page = await list_triggers(client, admin, workflow_id, limit=2, offset=1)

    assert page["total"] == 3 and page["limit"] == 2 and page["offset"] == 1
    assert [t["schedule"] for t in page["triggers"]] == ["rate(3 minutes)", "rate(4 minutes)"]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"type": "schedule", "schedule": "rate(0 minutes)"}, "schedule", "positive"),
        ({"type": "schedule", "schedule": "cron(0 9 * * *)"}, "schedule", "six fields"),
        ({"type": "schedule", "schedule": "cron(0 9 * * * *)"}, "schedule", "'?'"),
        ({"type": "schedule"}, "schedule", "needs"),
        ({"type": "event", "event_pattern": {"source": "my.app"}}, "event_pattern.source", "array"),
        ({"type": "event", "event_pattern": {}}, "event_pattern", "non-empty"),
        (
            {"type": "event", "event_pattern": {"n": [{"numeric": [">", 5, "<", 1]}]}},
            "event_pattern.n[0].numeric",
            "below",
        ),
        ({"type": "event"}, "event_pattern", "needs"),
        (
            {"type": "event", "event_pattern": {"a": ["x"]}, "schedule": "rate(1 day)"},
            "schedule",
            "only a schedule",
        ),
        ({"type": "webhook"}, "type", ""),
        ({"type": "schedule", "schedule": "rate(1 day)", "extra": 1}, "extra", ""),
        (
            {"type": "schedule", "schedule": "rate(1 day)", "inputs": {"text": "$.detail..x"}},
            "inputs.text",
            "path",
        ),
    ],
)
async def test_invalid_triggers_are_refused_with_field_errors(
    client: httpx.AsyncClient, admin: Session, body: dict[str, Any], field: str, message: str
) -> None:
    workflow_id = await make_workflow(client, admin)
    body.setdefault("inputs", {"text": "x"})

    errors = field_errors(await add_trigger(client, admin, workflow_id, body))

    assert field in errors, errors
    assert message in errors[field]


async def test_a_trigger_must_supply_every_required_input(
    client: httpx.AsyncClient, admin: Session
) -> None:
    workflow_id = await make_workflow(client, admin)

    errors = field_errors(
        await add_trigger(
            client, admin, workflow_id, {"type": "schedule", "schedule": "rate(1 day)"}
        )
    )

    assert errors == {"inputs.text": "the workflow requires input 'text'"}


async def test_another_users_workflow_has_no_triggers_to_see_or_touch(
    client: httpx.AsyncClient, admin: Session, create_user: CreateUser
) -> None:
    owner = await create_user("owner")
    other = await create_user("other")
    workflow_id = await make_workflow(client, owner)
    body = {"type": "schedule", "schedule": "rate(1 day)", "inputs": {"text": "x"}}
    trigger_id = (await add_trigger(client, owner, workflow_id, body)).json()["id"]

    created = await add_trigger(client, other, workflow_id, body)
    listed = await client.get(f"/workflows/{workflow_id}/triggers", headers=other.headers)
    deleted = await client.delete(
        f"/workflows/{workflow_id}/triggers/{trigger_id}", headers=other.headers
    )

    assert [created.status_code, listed.status_code, deleted.status_code] == [404, 404, 404]
    assert (await list_triggers(client, admin, workflow_id))["total"] == 1


async def test_a_viewer_may_list_but_not_add_triggers(
    client: httpx.AsyncClient, admin: Session, create_user: CreateUser
) -> None:
    viewer = await create_user("watcher", roles=["viewer"])
    workflow_id = await make_workflow(client, admin)
    body = {"type": "schedule", "schedule": "rate(1 day)", "inputs": {"text": "x"}}

    response = await add_trigger(client, viewer, workflow_id, body)

    assert response.status_code == 403 and response.json()["code"] == "forbidden"


async def test_deleting_the_workflow_deletes_its_triggers(
    client: httpx.AsyncClient, admin: Session, database_url: str
) -> None:
    workflow_id = await make_workflow(client, admin)
    body = {"type": "event", "event_pattern": {"source": ["x"]}, "inputs": {"text": "x"}}
    assert (await add_trigger(client, admin, workflow_id, body)).status_code == 201

    assert (
        await client.delete(f"/workflows/{workflow_id}", headers=admin.headers)
    ).status_code == 204

    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM triggers").fetchone() == (0,)


# -- the local scheduler ---------------------------------------------------------------------


async def test_a_one_minute_rate_fires_within_its_minute(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    workflow_id = await make_workflow(client, admin)
    trigger = (
        await add_trigger(
            client,
            admin,
            workflow_id,
            {"type": "schedule", "schedule": "rate(1 minute)", "inputs": {"text": "tick"}},
        )
    ).json()
    created = datetime.fromisoformat(trigger["created_at"])
    clock = FakeClock(created + timedelta(seconds=59))
    scheduler = LocalScheduler(server.runtime.triggers, clock=clock, sleep=clock.sleep)

    assert await scheduler.tick() == []
    clock.now = created + timedelta(seconds=60)
    fired = await scheduler.tick()
    assert await scheduler.tick() == [], "a tick fires once"

    assert len(fired) == 1 and fired[0].execution_id is not None
    finished = await wait_for(client, admin, workflow_id, fired[0].execution_id)
    assert finished["status"] == "completed"
    assert prompts(fake_openai) == ["Summarise: tick"]
    listed = (await list_triggers(client, admin, workflow_id))["triggers"][0]
    assert listed["last_execution_id"] == fired[0].execution_id
    assert datetime.fromisoformat(listed["next_fire_at"]) == created + timedelta(minutes=2)


async def test_the_scheduler_loop_fires_a_schedule_on_its_own(
    client: httpx.AsyncClient, admin: Session, server: LocalServer
) -> None:
    workflow_id = await make_workflow(client, admin)
    trigger = (
        await add_trigger(
            client,
            admin,
            workflow_id,
            {"type": "schedule", "schedule": "rate(1 minute)", "inputs": {"text": "loop"}},
        )
    ).json()
    clock = FakeClock(datetime.fromisoformat(trigger["created_at"]))
    scheduler = LocalScheduler(server.runtime.triggers, clock=clock, sleep=clock.sleep)

    scheduler.start()
    try:
        last: dict[str, Any] = {}

        async def fired() -> bool:
            last.update((await list_triggers(client, admin, workflow_id))["triggers"][0])
            return last["last_execution_id"] is not None

        deadline = asyncio.get_running_loop().time() + 10
        while not await fired():
            assert asyncio.get_running_loop().time() < deadline, "the schedule never fired"
            await asyncio.sleep(0.01)
    finally:
        await scheduler.stop()

    assert datetime.fromisoformat(last["last_fired_at"]) - datetime.fromisoformat(
        trigger["created_at"]
    ) <= timedelta(seconds=61)


async def test_a_missed_tick_fires_once_then_the_schedule_moves_on(
    client: httpx.AsyncClient, admin: Session, server: LocalServer
) -> None:
    workflow_id = await make_workflow(client, admin)
    trigger = (
        await add_trigger(
            client,
            admin,
            workflow_id,
            {"type": "schedule", "schedule": "rate(1 minute)", "inputs": {"text": "late"}},
        )
    ).json()
    created = datetime.fromisoformat(trigger["created_at"])
    clock = FakeClock(created + timedelta(minutes=10, seconds=5))
    scheduler = LocalScheduler(server.runtime.triggers, clock=clock, sleep=clock.sleep)

    fired = await scheduler.tick()

    assert len(fired) == 1
    listed = (await list_triggers(client, admin, workflow_id))["triggers"][0]
    assert datetime.fromisoformat(listed["next_fire_at"]) == created + timedelta(minutes=11)


async def test_a_disabled_schedule_never_fires(
    client: httpx.AsyncClient, admin: Session, server: LocalServer
) -> None:
    workflow_id = await make_workflow(client, admin)
    body = {
        "type": "schedule",
        "schedule": "rate(1 minute)",
        "inputs": {"text": "x"},
        "enabled": False,
    }
    trigger = (await add_trigger(client, admin, workflow_id, body)).json()
    clock = FakeClock(datetime.fromisoformat(trigger["created_at"]) + timedelta(minutes=5))

    fired = await LocalScheduler(server.runtime.triggers, clock=clock).tick()

    assert fired == [] and trigger["enabled"] is False


# -- events ----------------------------------------------------------------------------------


async def test_an_event_starts_exactly_the_workflows_whose_patterns_match(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI
) -> None:
    matching = await make_workflow(client, admin)
    prefix = await make_workflow(client, admin)
    other = await make_workflow(client, admin)
    patterns = {
        matching: {"source": ["my.app"], "detail": {"size": [{"numeric": [">", 100]}]}},
        prefix: {"detail-type": [{"prefix": "Document"}], "detail": {"lang": [{"exists": False}]}},
        other: {"source": ["my.app"], "detail": {"size": [{"numeric": ["<=", 100]}]}},
    }
    ids = {}
    for workflow_id, pattern in patterns.items():
        body = {"type": "event", "event_pattern": pattern, "inputs": {"text": "$.detail.text"}}
        response = await add_trigger(client, admin, workflow_id, body)
        assert response.status_code == 201, response.text
        ids[workflow_id] = response.json()["id"]

    response = await post_event(
        client,
        admin,
        source="my.app",
        **{"detail-type": "Document Uploaded"},
        detail={"size": 120, "text": "from the event"},
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["matched"] == 2
    started = {e["workflow_id"]: e["execution_id"] for e in body["executions"]}
    assert set(started) == {matching, prefix}
    assert {e["trigger_id"] for e in body["executions"]} == {ids[matching], ids[prefix]}
    for workflow_id, execution_id in started.items():
        finished = await wait_for(client, admin, workflow_id, execution_id)
        assert finished["status"] == "completed"
        assert finished["context"]["inputs"] == {"text": "from the event"}
    assert prompts(fake_openai) == ["Summarise: from the event"] * 2
    other_trigger = (await list_triggers(client, admin, other))["triggers"][0]
    assert other_trigger["last_fired_at"] is None


async def test_an_event_missing_an_input_path_records_why_nothing_started(
    client: httpx.AsyncClient, admin: Session
) -> None:
    workflow_id = await make_workflow(client, admin)
    body = {
        "type": "event",
        "event_pattern": {"source": ["my.app"]},
        "inputs": {"text": "$.detail.text"},
    }
    await add_trigger(client, admin, workflow_id, body)

    response = await post_event(client, admin, source="my.app", **{"detail-type": "X"}, detail={})

    assert response.json()["executions"][0]["execution_id"] is None
    listed = (await list_triggers(client, admin, workflow_id))["triggers"][0]
    assert listed["status"] == "active"
    assert "text" in listed["last_error"]


async def test_a_users_event_response_shows_only_their_own_triggers(
    client: httpx.AsyncClient, admin: Session, create_user: CreateUser
) -> None:
    dev = await create_user("dev")
    mine = await make_workflow(client, dev)
    theirs = await make_workflow(client, admin)
    body = {"type": "event", "event_pattern": {"source": ["shared.bus"]}, "inputs": {"text": "x"}}
    await add_trigger(client, dev, mine, body)
    await add_trigger(client, admin, theirs, body)

    response = await post_event(client, dev, source="shared.bus", **{"detail-type": "X"})

    assert response.json()["matched"] == 2
    assert [e["workflow_id"] for e in response.json()["executions"]] == [mine]


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"source": "aws.s3", "detail-type": "X"}, "source"),
        ({"detail-type": "X"}, "source"),
        ({"source": "my.app"}, "detail-type"),
        ({"source": "", "detail-type": "X"}, "source"),
        ({"source": "my.app", "detail-type": "X", "detail": "text"}, "detail"),
        ({"source": "my.app", "detail-type": "X", "bogus": 1}, "bogus"),
    ],
)
async def test_bad_events_are_refused(
    client: httpx.AsyncClient, admin: Session, event: dict[str, Any], field: str
) -> None:
    errors = field_errors(await client.post("/events", headers=admin.headers, json=event))

    assert field in errors, errors


async def test_posting_events_needs_workflow_execute(
    client: httpx.AsyncClient, create_user: CreateUser
) -> None:
    viewer = await create_user("watcher", roles=["viewer"])

    response = await post_event(client, viewer, source="my.app", **{"detail-type": "X"})

    assert response.status_code == 403


# -- running as the creator ------------------------------------------------------------------


async def test_a_trigger_whose_creator_lost_the_permission_stops_and_says_why(
    client: httpx.AsyncClient, admin: Session, create_user: CreateUser, database_url: str
) -> None:
    dev = await create_user("dev")
    workflow_id = await make_workflow(client, dev)
    body = {"type": "event", "event_pattern": {"source": ["my.app"]}, "inputs": {"text": "x"}}
    await add_trigger(client, dev, workflow_id, body)
    run_sql(database_url, "UPDATE users SET roles = '{viewer}' WHERE id = %s", dev.user_id)

    response = await post_event(client, admin, source="my.app", **{"detail-type": "X"})
    again = await post_event(client, admin, source="my.app", **{"detail-type": "X"})

    assert response.json()["executions"][0]["execution_id"] is None
    assert again.json()["matched"] == 0, "a stopped trigger no longer matches"
    listed = (await list_triggers(client, admin, workflow_id))["triggers"][0]
    assert listed["status"] == "stopped"
    assert listed["status_reason"] == "the trigger's creator 'dev' no longer has WorkflowExecute"
    executions = await client.get(
        f"/workflows/{workflow_id}/status", headers=admin.headers, params={"executionId": "x"}
    )
    assert executions.status_code == 404
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM executions").fetchone() == (0,)


async def test_a_trigger_whose_creator_was_removed_does_not_run(
    client: httpx.AsyncClient,
    admin: Session,
    create_user: CreateUser,
    server: LocalServer,
    database_url: str,
) -> None:
    owner = await create_user("owner")
    operator = await create_user("operator", roles=["admin"])
    workflow_id = await make_workflow(client, owner)
    body = {"type": "schedule", "schedule": "rate(1 minute)", "inputs": {"text": "x"}}
    trigger = (await add_trigger(client, operator, workflow_id, body)).json()
    assert trigger["created_by"] == operator.user_id
    run_sql(database_url, "DELETE FROM users WHERE id = %s", operator.user_id)
    clock = FakeClock(datetime.fromisoformat(trigger["created_at"]) + timedelta(minutes=1))

    fired = await LocalScheduler(server.runtime.triggers, clock=clock).tick()

    assert [f.skipped for f in fired] == ["stopped"]
    listed = (await list_triggers(client, owner, workflow_id))["triggers"][0]
    assert listed["status"] == "stopped" and listed["created_by"] is None
    assert listed["status_reason"] == "the trigger's creator no longer exists"
    assert listed["next_fire_at"] is None
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM executions").fetchone() == (0,)


async def test_a_fired_trigger_is_audited_as_its_creator(
    client: httpx.AsyncClient, admin: Session
) -> None:
    workflow_id = await make_workflow(client, admin)
    body = {"type": "event", "event_pattern": {"source": ["my.app"]}, "inputs": {"text": "x"}}
    trigger_id = (await add_trigger(client, admin, workflow_id, body)).json()["id"]

    started = (await post_event(client, admin, source="my.app", **{"detail-type": "X"})).json()

    execution_id = started["executions"][0]["execution_id"]
    events = (
        await client.get(
            "/audit/events", headers=admin.headers, params={"resource_id": execution_id}
        )
    ).json()
    assert events["events"], events
    first = events["events"][-1]
    assert first["user_id"] == admin.user_id and first["action"] == "start"
    assert first["details"]["trigger_id"] == trigger_id


# -- completion events -----------------------------------------------------------------------


async def test_a_completion_event_starts_the_workflows_listening_for_it(
    client: httpx.AsyncClient,
    admin: Session,
    fake_openai: FakeOpenAI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="llm_orchestrator.triggers.completion")
    first = await make_workflow(client, admin)
    follower = await make_workflow(client, admin)
    pattern = {
        "source": ["llm-orchestrator"],
        "detail-type": ["Execution Completed"],
        "detail": {"workflow_id": [first]},
    }
    await add_trigger(
        client,
        admin,
        follower,
        {"type": "event", "event_pattern": pattern, "inputs": {"text": "$.detail.execution_id"}},
    )
    # Listening to its own completion would loop for ever: it never fires.
    await add_trigger(
        client, admin, first, {"type": "event", "event_pattern": pattern, "inputs": {"text": "x"}}
    )

    execution_id = (
        await client.post(
            f"/workflows/{first}/execute", headers=admin.headers, json={"inputs": {"text": "go"}}
        )
    ).json()["execution_id"]
    await wait_for(client, admin, first, execution_id)

    deadline = asyncio.get_running_loop().time() + 15
    while (follow := (await list_triggers(client, admin, follower))["triggers"][0])[
        "last_execution_id"
    ] is None:
        assert asyncio.get_running_loop().time() < deadline, "the follower never started"
        await asyncio.sleep(0.02)
    finished = await wait_for(client, admin, follower, follow["last_execution_id"])
    assert finished["context"]["inputs"] == {"text": execution_id}
    own = (await list_triggers(client, admin, first))["triggers"][0]
    assert own["last_fired_at"] is None
    logged = [r.getMessage() for r in caplog.records if "completion event" in r.getMessage()]
    assert any(execution_id in line and "Execution Completed" in line for line in logged)
    assert all("echo:" not in line for line in logged), "outputs never ride on the event"
