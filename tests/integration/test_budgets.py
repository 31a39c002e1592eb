"""Monthly budgets per user: set and read by an admin, execute refused once spent, a
running execution stopped after the step that crossed it, spend counted atomically, and
triggers of a user whose budget is spent starting nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from llm_orchestrator.config import Settings
from llm_orchestrator.server import LocalServer, bootstrap, build_local_server
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import CreateUser, Session
from tests.integration.execution_support import (
    TERMINAL,
    create_workflow,
    get_status,
    wait_for,
    wait_held,
)
from tests.integration.llm_support import (
    _fresh_fakes,
    anthropic_fake,
    cohere_fake,
    llm,
    openai_fake,
    server,
)

__all__ = ["_fresh_fakes", "anthropic_fake", "cohere_fake", "openai_fake", "server"]

MODEL = "budget-model"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Twenty executions start at once on a loaded machine: these tests are about budgets, so
    # a connection wait must not turn an answer into the 503 the deadlines promise.
    return settings.model_copy(
        update={"db_pool_timeout_seconds": 30.0, "db_statement_timeout_seconds": 30.0}
    )


# "Hi there" is 2 tokens in, "echo: Hi there" 3 out: a cent a call at $0.002 a token.
DOLLAR_A_CALL = {
    "prices": [
        {
            "provider": "openai",
            "model": MODEL,
            "input_usd_per_million": 2_000,
            "output_usd_per_million": 2_000,
        }
    ]
}
INPUTS = {"x": "there"}


def step(step_id: str, **extra: Any) -> dict[str, Any]:
    return llm(step_id, "openai", MODEL, prompt="Hi {{x}}", output=[f"out_{step_id}"], **extra)


def next_month_start() -> str:
    now = datetime.now(UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return f"{year:04d}-{month:02d}-01T00:00:00Z"


async def set_budget(
    client: httpx.AsyncClient, admin: Session, user_id: str, monthly_usd: Any
) -> httpx.Response:
    return await client.put(
        f"/admin/users/{user_id}/budget", headers=admin.headers, json={"monthly_usd": monthly_usd}
    )


async def priced(client: httpx.AsyncClient, admin: Session) -> None:
    response = await client.put("/admin/pricing", headers=admin.headers, json=DOLLAR_A_CALL)
    assert response.status_code == 200, response.text


async def execute(client: httpx.AsyncClient, session: Session, workflow_id: str) -> httpx.Response:
    return await client.post(
        f"/workflows/{workflow_id}/execute", headers=session.headers, json={"inputs": INPUTS}
    )


def assert_refused_for_budget(response: httpx.Response, monthly_usd: float, spent: float) -> None:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["code"] == "rate_limited"
    details = body["details"]
    assert details["reason"] == "budget_exhausted"
    assert details["monthly_usd"] == monthly_usd
    assert details["spent_usd"] == pytest.approx(spent)
    assert details["resets_at"] == next_month_start()
    assert int(response.headers["Retry-After"]) == details["retry_after"] > 0


async def test_an_admin_sets_reads_and_clears_a_budget(
    client: httpx.AsyncClient, admin: Session, create_user: CreateUser
) -> None:
    dev = await create_user("dev")

    fresh = await client.get(f"/admin/users/{dev.user_id}/budget", headers=admin.headers)
    assert fresh.json() == {"monthly_usd": None, "spent_usd": 0.0, "resets_at": next_month_start()}

    set_ = await set_budget(client, admin, dev.user_id, 25.0)
    assert set_.status_code == 200, set_.text
    assert set_.json()["monthly_usd"] == 25.0
    read = await client.get(f"/admin/users/{dev.user_id}/budget", headers=admin.headers)
    assert read.json()["monthly_usd"] == 25.0

    cleared = await set_budget(client, admin, dev.user_id, None)
    assert cleared.json()["monthly_usd"] is None


@pytest.mark.parametrize(
    "body", [{"monthly_usd": -1}, {"monthly_usd": "25"}, {}, {"monthly_usd": 5, "currency": "EUR"}]
)
async def test_a_bad_budget_is_refused(
    client: httpx.AsyncClient, admin: Session, body: dict[str, Any]
) -> None:
    response = await client.put(
        f"/admin/users/{admin.user_id}/budget", headers=admin.headers, json=body
    )

    assert response.status_code == 400, response.text
    assert response.json()["code"] == "validation_error"


async def test_budgets_of_unknown_users_are_404_and_only_admins_see_them(
    client: httpx.AsyncClient, admin: Session, create_user: CreateUser
) -> None:
    dev = await create_user("dev")

    assert (await set_budget(client, admin, "user-nope", 5)).status_code == 404
    missing = await client.get("/admin/users/user-nope/budget", headers=admin.headers)
    assert missing.status_code == 404
    own = await client.get(f"/admin/users/{dev.user_id}/budget", headers=dev.headers)
    assert own.status_code == 403
    assert (await set_budget(client, dev, dev.user_id, 1000)).status_code == 403


async def test_the_configured_default_applies_until_an_admin_sets_one(
    settings: Settings, client: httpx.AsyncClient, admin: Session, create_user: CreateUser
) -> None:
    dev = await create_user("dev")
    local = build_local_server(
        settings.model_copy(update={"default_monthly_budget_usd": 3.0}),
        database_url=settings.database_url,
    )
    await bootstrap(local.runtime)
    try:
        assert (await local.runtime.budgets.status(dev.user_id)).monthly_usd == 3.0
        await local.runtime.budgets.set(dev.user_id, None, by=admin.user_id)
        assert (await local.runtime.budgets.status(dev.user_id)).monthly_usd is None
    finally:
        await local.runtime.close()


async def test_an_execution_that_crosses_the_budget_finishes_its_step_then_stops(
    client: httpx.AsyncClient, admin: Session, create_user: CreateUser, openai_fake: FakeOpenAI
) -> None:
    await priced(client, admin)
    dev = await create_user("dev")
    assert (await set_budget(client, admin, dev.user_id, 0.015)).status_code == 200
    await crosses_its_budget_at_the_third_step(client, admin, dev, openai_fake)


async def crosses_its_budget_at_the_third_step(
    client: httpx.AsyncClient, admin: Session, dev: Session, openai_fake: FakeOpenAI
) -> None:
    """A three-step chain of ``dev``, whose budget ($0.015, a cent a call) is spent after the
    second call: the run stops at the third step, and the next execute is refused."""
    chain = [step("a"), step("b", depends_on=["a"]), step("c", depends_on=["b"])]
    workflow_id = await create_workflow(client, dev, chain)

    started = await execute(client, dev, workflow_id)
    final = await wait_for(client, dev, workflow_id, started.json()["execution_id"])

    assert final["status"] == "failed"
    assert final["error"]["type"] == "BudgetExhausted"
    assert final["error"]["step_id"] == "c"
    assert [final["steps"][s]["status"] for s in "abc"] == ["completed", "completed", "failed"]
    assert final["steps"]["c"]["usage"] is None
    assert len(openai_fake.requests_to("/v1/chat/completions")) == 2
    assert final["usage"]["cost_usd"] == pytest.approx(0.02)
    budget = (await client.get(f"/admin/users/{dev.user_id}/budget", headers=admin.headers)).json()
    assert budget["spent_usd"] == pytest.approx(0.02)
    assert_refused_for_budget(await execute(client, dev, workflow_id), 0.015, 0.02)


async def one_step_on_a_nickel(
    client: httpx.AsyncClient, admin: Session, create_user: CreateUser
) -> tuple[Session, str]:
    """An enterprise user (no rate limit in the way) with a $0.05 budget, five calls' worth,
    and a one-step workflow of theirs."""
    await priced(client, admin)
    dev = await create_user("dev", tier="enterprise")
    assert (await set_budget(client, admin, dev.user_id, 0.05)).status_code == 200
    return dev, await create_workflow(client, dev, [step("a")])


async def test_the_calls_in_flight_when_the_budget_is_reached_are_its_only_overspend(
    client: httpx.AsyncClient, admin: Session, create_user: CreateUser, openai_fake: FakeOpenAI
) -> None:
    dev, workflow_id = await one_step_on_a_nickel(client, admin, create_user)
    # Eight calls in flight at once, none paid yet: each was admitted against $0 spent.
    openai_fake.hold()
    started = [await execute(client, dev, workflow_id) for _ in range(8)]
    assert [s.status_code for s in started] == [202] * 8
    await wait_held(openai_fake, 8)

    assert openai_fake.release() == 8
    finals = [
        await wait_for(client, dev, workflow_id, s.json()["execution_id"], timeout=60)
        for s in started
    ]

    # They finish and every one is paid: eight cents committed at once, none lost.
    assert [f["status"] for f in finals] == ["completed"] * 8
    budget = (await client.get(f"/admin/users/{dev.user_id}/budget", headers=admin.headers)).json()
    assert budget["spent_usd"] == pytest.approx(0.08)
    # Beyond those, nothing: the next execution is refused, and no call was made for it.
    assert_refused_for_budget(await execute(client, dev, workflow_id), 0.05, 0.08)
    assert len(openai_fake.requests_to("/v1/chat/completions")) == 8


async def test_concurrent_executions_count_every_call_once(
    client: httpx.AsyncClient, admin: Session, create_user: CreateUser, openai_fake: FakeOpenAI
) -> None:
    dev, workflow_id = await one_step_on_a_nickel(client, admin, create_user)
    openai_fake.latency = 0.05

    answers = await asyncio.gather(*(execute(client, dev, workflow_id) for _ in range(20)))

    accepted = [a.json()["execution_id"] for a in answers if a.status_code == 202]
    for refusal in (a for a in answers if a.status_code != 202):
        assert refusal.status_code == 429
        assert refusal.json()["details"]["reason"] == "budget_exhausted"
    finals = [await wait_for(client, dev, workflow_id, e, timeout=60) for e in accepted]
    completed = [f for f in finals if f["status"] == "completed"]
    stopped = [f for f in finals if f["status"] != "completed"]
    assert all(f["error"]["type"] == "BudgetExhausted" for f in stopped)
    calls = openai_fake.requests_to("/v1/chat/completions")
    budget = (await client.get(f"/admin/users/{dev.user_id}/budget", headers=admin.headers)).json()
    # Counted atomically: every call's cent is in the spend, none lost to a race. How far
    # past the budget the race goes depends on scheduling (how many steps began before the
    # fifth cent was committed); the test above pins that bound with held calls.
    assert budget["spent_usd"] == pytest.approx(0.01 * len(calls))
    assert len(completed) == len(calls) >= 5
    # Once spent, the rest is refused with the documented body.
    assert_refused_for_budget(await execute(client, dev, workflow_id), 0.05, 0.01 * len(calls))
    statuses = [(await get_status(client, dev, workflow_id, e))["status"] for e in accepted]
    assert all(s in TERMINAL for s in statuses)


def test_the_app_role_reads_and_writes_the_usage_and_budget_tables(database_url: str) -> None:
    import psycopg

    from llm_orchestrator.store.roles import APP_ROLE

    with psycopg.connect(database_url, autocommit=True) as app:
        assert app.execute("SELECT current_user").fetchone() == (APP_ROLE,)
        app.execute(
            "INSERT INTO users (id, username, email, password_hash, roles, tier)"
            " VALUES ('user-role', 'role', 'role@example.com', 'x', '{developer}', 'free')"
        )
        app.execute(
            "INSERT INTO provider_calls (execution_id, step_id, owner_id, provider, model,"
            " outcome, latency_ms, cost_usd) VALUES ('e', 's', 'user-role', 'openai', 'm',"
            " 'succeeded', 1.0, 0.5)"
        )
        for _ in range(2):
            app.execute(
                "INSERT INTO user_spend (owner_id, month, spent_usd) VALUES ('user-role',"
                " '2026-11-01', 0.5) ON CONFLICT (owner_id, month, shard)"
                " DO UPDATE SET spent_usd = user_spend.spent_usd + EXCLUDED.spent_usd"
            )
        app.execute("INSERT INTO user_budgets (user_id, monthly_usd) VALUES ('user-role', 1)")
        app.execute(
            "INSERT INTO model_prices (provider, model, input_usd_per_million,"
            " output_usd_per_million) VALUES ('openai', 'm', 1, 2)"
        )
        app.execute("DELETE FROM model_prices")
        spent = app.execute("SELECT spent_usd FROM user_spend WHERE owner_id = 'user-role'")
        assert float(spent.fetchone()[0]) == 1.0


# -- executions started by triggers ---------------------------------------------------------


async def add_trigger(
    client: httpx.AsyncClient, session: Session, workflow_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    response = await client.post(
        f"/workflows/{workflow_id}/triggers", headers=session.headers, json=body
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def the_trigger(
    client: httpx.AsyncClient, session: Session, workflow_id: str
) -> dict[str, Any]:
    response = await client.get(f"/workflows/{workflow_id}/triggers", headers=session.headers)
    [trigger] = response.json()["triggers"]
    return dict(trigger)


async def test_an_event_trigger_of_a_user_over_budget_starts_nothing_and_says_why(
    client: httpx.AsyncClient, admin: Session, create_user: CreateUser, openai_fake: FakeOpenAI
) -> None:
    dev = await create_user("dev")
    workflow_id = await create_workflow(client, dev, [step("a")])
    trigger = await add_trigger(
        client,
        dev,
        workflow_id,
        {"type": "event", "event_pattern": {"source": ["my.app"]}, "inputs": INPUTS},
    )
    assert (await set_budget(client, admin, dev.user_id, 0)).status_code == 200
    event = {"source": "my.app", "detail-type": "Tick", "detail": {}}

    posted = await client.post("/events", headers=dev.headers, json=event)

    assert posted.status_code == 200, posted.text
    [firing] = posted.json()["executions"]
    assert firing["execution_id"] is None
    assert "Monthly budget exhausted" in firing["error"]
    listed = await the_trigger(client, dev, workflow_id)
    assert (listed["status"], listed["last_execution_id"]) == ("active", None)
    assert listed["last_error"] == firing["error"]
    assert f"resets at {next_month_start()}" in listed["last_error"]
    assert openai_fake.requests_to("/v1/chat/completions") == []
    audited = await client.get(
        "/audit/events",
        headers=admin.headers,
        params={"resource_type": "trigger", "resource_id": trigger["id"], "result": "failure"},
    )
    [event_record] = audited.json()["events"]
    assert event_record["action"] == "start"
    assert event_record["details"]["reason"] == "budget_exhausted"

    # The trigger keeps firing: once the budget is raised, the next event runs.
    assert (await set_budget(client, admin, dev.user_id, None)).status_code == 200
    again = (await client.post("/events", headers=dev.headers, json=event)).json()
    execution_id = again["executions"][0]["execution_id"]
    assert execution_id is not None
    assert (await wait_for(client, dev, workflow_id, execution_id))["status"] == "completed"


async def test_a_schedule_of_a_user_over_budget_starts_nothing_and_says_why(
    client: httpx.AsyncClient,
    admin: Session,
    create_user: CreateUser,
    server: LocalServer,
    openai_fake: FakeOpenAI,
) -> None:
    dev = await create_user("dev")
    workflow_id = await create_workflow(client, dev, [step("a")])
    trigger = await add_trigger(
        client,
        dev,
        workflow_id,
        {"type": "schedule", "schedule": "rate(1 minute)", "inputs": INPUTS},
    )
    assert (await set_budget(client, admin, dev.user_id, 0)).status_code == 200
    due = datetime.fromisoformat(trigger["created_at"]) + timedelta(minutes=1)

    [firing] = await server.runtime.triggers.fire_due_schedules(due)

    assert firing.execution_id is None
    assert firing.error is not None and "Monthly budget exhausted" in firing.error
    listed = await the_trigger(client, dev, workflow_id)
    assert listed["last_error"] == firing.error
    assert listed["status"] == "active"
    assert datetime.fromisoformat(listed["next_fire_at"]) == due + timedelta(minutes=1)
    assert openai_fake.requests_to("/v1/chat/completions") == []


async def test_a_spent_budget_is_refused_before_the_workflow_and_its_inputs_are_looked_at(
    client: httpx.AsyncClient, admin: Session, create_user: CreateUser
) -> None:
    dev = await create_user("dev")
    workflow_id = await create_workflow(client, dev, [step("a")])
    assert (await set_budget(client, admin, dev.user_id, 0)).status_code == 200

    for target, body in (
        (workflow_id, {"inputs": INPUTS}),
        (workflow_id, {"inputs": {}}),  # a required input missing: 400 within budget
        ("3b0b5e2c-6a8e-4a9c-9a3e-8f1f0b6f8d11", {"inputs": INPUTS}),  # no such workflow
        ("not-a-workflow-id", {"inputs": INPUTS}),  # no workflow can have this id
    ):
        response = await client.post(f"/workflows/{target}/execute", headers=dev.headers, json=body)
        assert_refused_for_budget(response, 0.0, 0.0)

    assert (await set_budget(client, admin, dev.user_id, None)).status_code == 200
    assert (await execute(client, dev, "3b0b5e2c-6a8e-4a9c-9a3e-8f1f0b6f8d11")).status_code == 404
    assert (await execute(client, dev, "not-a-workflow-id")).status_code == 404
    missing = await client.post(
        f"/workflows/{workflow_id}/execute", headers=dev.headers, json={"inputs": {}}
    )
    assert missing.status_code == 400, missing.text


async def test_an_admins_submit_is_checked_against_their_own_budget_on_the_next_request(
    client: httpx.AsyncClient, admin: Session, create_user: CreateUser
) -> None:
    """An admin's submit reads the workflow with their authentication, and the budget read
    with it is their own (named by the token, then checked against the verified caller)."""
    boss = await create_user("boss", roles=["admin"])
    dev = await create_user("dev")
    workflow_id = await create_workflow(client, dev, [step("a")])
    for _ in range(2):
        assert (await execute(client, boss, workflow_id)).status_code == 202
    assert (await set_budget(client, admin, boss.user_id, 0)).status_code == 200
    assert_refused_for_budget(await execute(client, boss, workflow_id), 0.0, 0.0)
    # The dev's own budget is untouched, and the admin's is theirs alone.
    assert (await execute(client, dev, workflow_id)).status_code == 202
    assert (await execute(client, admin, workflow_id)).status_code == 202
    assert (await set_budget(client, admin, boss.user_id, None)).status_code == 200
    assert (await execute(client, boss, workflow_id)).status_code == 202
