"""The Python SDK (``llm_orchestrator.client``) against the real API on a real port."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from llm_orchestrator.auth.tokens import TokenCodec
from llm_orchestrator.client import (
    APIConnectionError,
    Client,
    Conflict,
    Execution,
    Forbidden,
    LLMOrchestratorError,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
    ValidationError,
    WaitTimeout,
)
from llm_orchestrator.clock import utcnow
from llm_orchestrator.config import Settings
from llm_orchestrator.ratelimit.limiter import RateLimiter
from llm_orchestrator.runtime import tier_limits
from llm_orchestrator.store.rate_limits import RateLimitRepository
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, JWT_SECRET, fake_environ
from tests.integration.execution_support import llm_step
from tests.integration.live_server import LiveServer, start_live_server

TWO_STEPS = [
    llm_step("draft", "write about {{topic}}", "draft"),
    llm_step("polish", "polish {{draft}}", "final", depends_on=["draft"]),
]


@pytest.fixture
def admin(live: LiveServer) -> Iterator[Client]:
    with Client(live.url, username=ADMIN_USERNAME, password=ADMIN_PASSWORD) as client:
        yield client


def make_user(admin: Client, live: LiveServer, roles: list[str], tier: str = "free") -> Client:
    name = f"u{uuid.uuid4().hex[:8]}"
    admin.admin.users.create(name, f"{name}@example.com", f"{name}-password", roles, tier)
    return Client(live.url, username=name, password=f"{name}-password")


def prompt_of(body: Any) -> str:
    return str(body["messages"][-1]["content"])


def test_workflow_resource_round_trip(admin: Client) -> None:
    created = admin.workflows.create(name="sdk-flow", version="1.0", steps=TWO_STEPS)
    assert created.inputs == ["topic"]

    fetched = admin.workflows.get(created.id)
    updated = admin.workflows.update(
        created.id, {"name": "sdk-flow", "version": "1.0", "steps": TWO_STEPS[:1]}
    )
    listed = list(admin.workflows.list(name="sdk-"))
    admin.workflows.delete(created.id)

    assert fetched.steps[0]["id"] == "draft"
    assert [s["id"] for s in updated.steps] == ["draft"]
    assert [w.id for w in listed] == [created.id]
    with pytest.raises(NotFound):
        admin.workflows.get(created.id)


def test_listing_follows_limit_and_offset_across_pages(admin: Client) -> None:
    ids = {
        admin.workflows.create(name=f"paged-{n}", version="1.0", steps=TWO_STEPS[:1]).id
        for n in range(5)
    }

    listed = list(admin.workflows.list(name="paged-", page_size=2))

    assert len(listed) == 5
    assert {w.id for w in listed} == ids
    assert [w.id for w in admin.workflows.list(name="paged-", version="2.0")] == []


def test_execute_and_wait_runs_both_steps(admin: Client, fake_openai: FakeOpenAI) -> None:
    workflow = admin.workflows.create(name="two", version="1.0", steps=TWO_STEPS)
    seen: list[str] = []

    accepted = admin.workflows.execute(workflow.id, {"topic": "owls"})
    final = admin.executions.wait(
        workflow.id, accepted.execution_id, timeout=30, on_update=lambda e: seen.append(e.status)
    )

    assert accepted.status == "pending"
    assert final.status == "completed"
    assert final.outputs == {
        "draft": "echo: write about owls",
        "final": "echo: polish echo: write about owls",
    }
    assert final.steps["polish"].latency_ms is not None
    assert final.steps["draft"].input_tokens is not None
    assert seen[-1] == "completed"
    assert admin.executions.get(workflow.id, accepted.execution_id).status == "completed"
    assert admin.state.get(workflow.id, accepted.execution_id).id == accepted.execution_id
    waited = admin.workflows.execute(workflow.id, {"topic": "cats"}, wait=True)
    assert isinstance(waited, Execution) and waited.status == "completed"


def test_wait_gives_up_after_its_timeout(admin: Client, fake_openai: FakeOpenAI) -> None:
    fake_openai.latency = 30.0  # the execution outlives the test
    workflow = admin.workflows.create(name="slow", version="1.0", steps=TWO_STEPS[:1])
    accepted = admin.workflows.execute(workflow.id, {"topic": "x"})

    with pytest.raises(WaitTimeout) as caught:
        admin.executions.wait(workflow.id, accepted.execution_id, timeout=0.3)

    assert caught.value.details["status"] in ("pending", "running")


def test_pause_resume_cancel_checkpoints_and_restore(
    admin: Client, fake_openai: FakeOpenAI
) -> None:
    # The first execution's first step takes long enough for the pause to land before the
    # execution could end; the second execution's outlives the test, so cancel finds it running.
    fake_openai.latency_of = lambda body: {"write about a": 1.5, "write about b": 30.0}.get(
        prompt_of(body)
    )
    workflow = admin.workflows.create(name="ctl", version="1.0", steps=TWO_STEPS)
    first = admin.workflows.execute(workflow.id, {"topic": "a"})

    paused = admin.executions.pause(workflow.id, first.execution_id)
    resumed = admin.executions.resume(workflow.id, first.execution_id)
    done = admin.executions.wait(workflow.id, first.execution_id, timeout=30)
    checkpoints = list(admin.checkpoints.list(workflow.id, first.execution_id, page_size=1))
    extra = admin.checkpoints.create(workflow.id, first.execution_id, step_id="polish")
    restored = admin.state.restore(workflow.id, checkpoints[0].id)
    second = admin.workflows.execute(workflow.id, {"topic": "b"})
    cancelled = admin.executions.cancel(workflow.id, second.execution_id)

    assert paused.status == "paused"
    assert resumed.status == "running"
    assert done.status == "completed"
    assert [c.step_id for c in checkpoints] == ["draft", "polish"]
    assert extra.step_id == "polish" and extra.workflow_state_id == first.execution_id
    assert restored.id == first.execution_id and restored.status in ("pending", "running")
    assert admin.executions.wait(workflow.id, first.execution_id, timeout=30).status == "completed"
    assert cancelled.status == "cancelled"


def test_keys_audit_admin_and_health(admin: Client, live: LiveServer) -> None:
    created = admin.keys.create("ci", ["workflow:read"], expires_in_days=7)
    with Client(live.url, api_key=created.key) as by_key:
        assert list(by_key.workflows.list()) == []
    listed = list(admin.keys.list())
    admin.keys.revoke(created.id)
    user = admin.admin.users.create("carol", "carol@example.com", "carol-password", ["viewer"])
    users = list(admin.admin.users.list(page_size=1))
    stored = admin.admin.set_secret("OPENAI_API_KEY", "sk-from-sdk", ttl_seconds=3600)
    events = list(admin.audit.events(event_type="api_key", page_size=1))

    assert created.key.startswith("llo_sk_")
    assert [k.id for k in listed] == [created.id]
    assert {u.username for u in users} == {"admin", "carol"} and user.roles == ["viewer"]
    assert stored.success and stored.key == "OPENAI_API_KEY"
    assert len(events) >= 2
    assert admin.audit.get(events[0].id).event_hash == events[0].event_hash
    assert admin.audit.verify().valid
    assert admin.admin.stats().total_workflows == 0
    assert admin.admin.config().features["audit_logging"] is True
    assert admin.health().status == "healthy"
    with Client(live.url, api_key=created.key) as revoked, pytest.raises(Unauthorized):
        list(revoked.workflows.list())


def test_each_error_class_from_the_server(admin: Client, live: LiveServer) -> None:
    viewer = make_user(admin, live, ["viewer"])
    workflow = admin.workflows.create(name="one", version="1.0", steps=TWO_STEPS[:1])
    accepted = admin.workflows.execute(workflow.id, {"topic": "x"})
    admin.executions.wait(workflow.id, accepted.execution_id, timeout=30)

    with pytest.raises(ValidationError) as invalid:
        admin.workflows.create(name="bad", version="1.0", steps=[])
    with pytest.raises(Unauthorized) as unauthorized:
        Client(live.url, api_key="llo_sk_not-a-key").workflows.get(workflow.id)
    with pytest.raises(Forbidden) as forbidden:
        viewer.workflows.create(name="nope", version="1.0", steps=TWO_STEPS[:1])
    with pytest.raises(NotFound) as missing:
        admin.workflows.get(str(uuid.uuid4()))
    with pytest.raises(Conflict) as conflict:
        admin.executions.pause(workflow.id, accepted.execution_id)

    assert invalid.value.status == 400 and invalid.value.code == "validation_error"
    assert invalid.value.errors and invalid.value.errors[0].field == "steps"
    assert unauthorized.value.status == 401
    assert forbidden.value.status == 403 and forbidden.value.code == "forbidden"
    assert missing.value.status == 404
    assert conflict.value.status == 409 and "completed" in conflict.value.message
    for error in (invalid, unauthorized, forbidden, missing, conflict):
        assert isinstance(error.value, LLMOrchestratorError)
        assert error.value.request_id and error.value.request_id.startswith("req-")


def test_a_server_failure_is_a_server_error(settings: Settings, fake_openai: FakeOpenAI) -> None:
    # Outside the local environment the secrets key must be configured; without one the
    # server cannot store a secret and answers 5xx.
    server = start_live_server(
        settings.model_copy(update={"environment": "staging"}), fake_environ(fake_openai)
    )
    try:
        client = Client(server.url, username=ADMIN_USERNAME, password=ADMIN_PASSWORD, max_retries=0)
        with pytest.raises(ServerError) as failed:
            client.admin.set_secret("OPENAI_API_KEY", "sk-x")
    finally:
        server.stop()

    assert failed.value.status is not None and failed.value.status >= 500
    assert failed.value.request_id


def test_connection_errors_are_retried_only_when_safe() -> None:
    calls: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        raise httpx.ConnectError("connection refused", request=request)

    client = Client(
        "http://127.0.0.1:9/api/v1",
        api_key="k",
        max_retries=2,
        transport=httpx.MockTransport(refuse),
    )
    client._sleep = lambda _: None

    with pytest.raises(APIConnectionError):
        client.workflows.get("w")
    with pytest.raises(APIConnectionError):
        client.workflows.execute("w", {})
    with pytest.raises(APIConnectionError):
        client.workflows.execute("w", {}, idempotency_key="k1")

    assert calls == ["GET"] * 3 + ["POST"] + ["POST"] * 3


def test_429_is_retried_after_retry_after(
    settings: Settings, fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    limited = settings.model_copy(update={"rate_limit_enterprise_per_minute": 3})
    server = start_live_server(limited, fake_environ(fake_openai))
    # The server's limiter on a clock the test moves: one second before a minute ends,
    # and forward by exactly as long as the client sleeps.
    now = [datetime(2026, 1, 1, 12, 0, 59, tzinfo=utcnow().tzinfo)]
    server.runtime.limiter = RateLimiter(
        RateLimitRepository(server.runtime.db), tier_limits(limited), lambda: now[0]
    )
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)
        now[0] += timedelta(seconds=seconds)

    try:
        with Client(server.url, username=ADMIN_USERNAME, password=ADMIN_PASSWORD) as admin:
            key = admin.keys.create("burst", ["workflow:read"]).key
            admin.admin.users.create(
                "ent", "ent@example.com", "ent-password", ["developer"], "enterprise"
            )
        client = Client(server.url, username="ent", password="ent-password")
        client._sleep = sleep
        eager = Client(server.url, username="ent", password="ent-password", max_retries=0)
        for _ in range(3):
            list(eager.workflows.list())
        with pytest.raises(RateLimited) as refused:
            list(eager.workflows.list())
        with caplog.at_level(logging.INFO, logger="llm_orchestrator.client"):
            assert list(client.workflows.list()) == []
    finally:
        server.stop()

    assert refused.value.retry_after == 1 and refused.value.status == 429
    assert len(slept) == 1 and 1.0 <= slept[0] <= 1.2
    assert "after 429" in caplog.text
    assert key


def test_an_expired_access_token_is_refreshed_once(admin: Client, live: LiveServer) -> None:
    tokens = admin.login()
    codec = TokenCodec(JWT_SECRET, key_id="k1")
    expired, _ = codec.issue(
        subject=tokens.user_id,
        token_type="access",
        now=utcnow() - timedelta(hours=2),
        ttl=timedelta(hours=1),
    )
    rotated: list[str] = []
    client = Client(
        live.url,
        token=expired,
        refresh_token=tokens.refresh_token,
        on_tokens=lambda t: rotated.append(t.refresh_token),
    )

    assert list(client.workflows.list()) == []
    assert client.access_token != expired
    assert rotated == [client.refresh_token] and client.refresh_token != tokens.refresh_token
    # The rotated refresh token is the live one: the next refresh uses it and succeeds.
    assert client.refresh().refresh_token == client.refresh_token


def test_a_token_about_to_expire_is_refreshed_before_the_call(
    admin: Client, live: LiveServer
) -> None:
    tokens = admin.login()
    client = Client(
        live.url,
        token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        token_expires_at=time.time() + 5,
    )

    client.admin.stats()

    assert client.access_token != tokens.access_token
    assert client.refresh_token != tokens.refresh_token
    with pytest.raises(Unauthorized):
        Client(live.url, token="garbage").admin.stats()


def test_logout_ends_the_session_on_the_server_and_forgets_its_tokens(
    admin: Client, live: LiveServer
) -> None:
    tokens = admin.login()
    # An access token the server refuses: logout renews it from the refresh token first,
    # since only a token of the session can end it.
    client = Client(live.url, token="expired-or-garbage", refresh_token=tokens.refresh_token)

    assert client.logout() is True

    assert client.access_token is None and client.refresh_token is None
    with pytest.raises(Unauthorized):
        Client(live.url, token=tokens.access_token).admin.stats()
    with pytest.raises(Unauthorized):
        Client(live.url, refresh_token=tokens.refresh_token).refresh()


def test_logout_of_a_session_that_already_ended_is_not_an_error(
    admin: Client, live: LiveServer
) -> None:
    tokens = admin.login()
    first = Client(live.url, token=tokens.access_token, refresh_token=tokens.refresh_token)
    second = Client(live.url, token=tokens.access_token, refresh_token=tokens.refresh_token)
    assert first.logout() is True

    assert second.logout() is False

    assert second.access_token is None and second.refresh_token is None
    assert Client(live.url).logout() is False  # nothing to end
    with pytest.raises(ValueError, match="API key"):
        Client(live.url, api_key="llo_sk_anything").logout()


async def test_async_logout_ends_the_session(admin: Client, live: LiveServer) -> None:
    from llm_orchestrator.client import AsyncClient

    tokens = admin.login()
    async with AsyncClient(
        live.url, token=tokens.access_token, refresh_token=tokens.refresh_token
    ) as client:
        assert await client.logout() is True
        assert await client.logout() is False

    with pytest.raises(Unauthorized):
        Client(live.url, token=tokens.access_token).admin.stats()


def test_idempotency_key_returns_the_same_execution(admin: Client, fake_openai: FakeOpenAI) -> None:
    workflow = admin.workflows.create(name="once", version="1.0", steps=TWO_STEPS[:1])
    key = str(uuid.uuid4())

    first = admin.workflows.execute(workflow.id, {"topic": "x"}, idempotency_key=key)
    again = admin.workflows.execute(workflow.id, {"topic": "x"}, idempotency_key=key)
    with pytest.raises(Conflict):
        admin.workflows.execute(workflow.id, {"topic": "y"}, idempotency_key=key)

    assert again.execution_id == first.execution_id
    admin.executions.wait(workflow.id, first.execution_id, timeout=30)
    assert admin.admin.stats().total_executions == 1


def test_wait_long_polls_the_server(admin: Client, fake_openai: FakeOpenAI) -> None:
    # The server holds `wait` calls until something changes: after its first read the
    # client only ever asks with `wait`, and never sleeps between answers that changed.
    fake_openai.latency = 1.5
    workflow = admin.workflows.create(name="poll", version="1.0", steps=TWO_STEPS[:1])
    accepted = admin.workflows.execute(workflow.id, {"topic": "x"})
    slept: list[float] = []
    admin._sleep = lambda seconds: (slept.append(seconds), time.sleep(seconds))[-1]
    waits: list[str | None] = []
    admin._http.event_hooks["request"].append(
        lambda request: (
            waits.append(request.url.params.get("wait"))
            if request.url.path.endswith("/status")
            else None
        )
    )

    final = admin.executions.wait(workflow.id, accepted.execution_id, timeout=30)

    assert final.status == "completed"
    assert admin._long_poll is not False
    assert waits[0] is None and len(waits) >= 2
    assert all(wait is not None and int(wait) > 0 for wait in waits[1:])
    assert slept in ([], [0.2])  # at most the pause after the first, plain read


async def test_async_client_covers_the_same_calls(live: LiveServer) -> None:
    from llm_orchestrator.client import AsyncClient

    async with AsyncClient(live.url, username=ADMIN_USERNAME, password=ADMIN_PASSWORD) as client:
        workflow = await client.workflows.create(name="async", version="1.0", steps=TWO_STEPS)
        for n in range(3):
            await client.workflows.create(name=f"async-{n}", version="1.0", steps=TWO_STEPS[:1])
        names = [w.name async for w in client.workflows.list(name="async", page_size=2)]
        seen: list[str] = []

        async def record(execution: Execution) -> None:
            seen.append(execution.status)

        accepted = await client.workflows.execute(
            workflow.id, {"topic": "t"}, idempotency_key="k-1"
        )
        again = await client.workflows.execute(workflow.id, {"topic": "t"}, idempotency_key="k-1")
        final = await client.executions.wait(
            workflow.id, accepted.execution_id, timeout=30, on_update=record
        )
        checkpoints = [c async for c in client.checkpoints.list(workflow.id, final.id)]
        with pytest.raises(NotFound):
            await client.workflows.get(str(uuid.uuid4()))

    assert sorted(names) == ["async", "async-0", "async-1", "async-2"]
    assert again.execution_id == accepted.execution_id
    assert final.status == "completed" and seen[-1] == "completed"
    assert [c.step_id for c in checkpoints] == ["draft", "polish"]
