"""Per-user / per-key / per-IP rate limits, counted in PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from llm_orchestrator.clock import utcnow
from llm_orchestrator.config import Settings
from llm_orchestrator.server import LocalServer, bootstrap, build_local_server
from tests.integration.conftest import ADMIN_PASSWORD, ADMIN_USERNAME


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[LocalServer]:
    """The wall clock stands still, so every request of a test falls in the same minute,
    hour and day window however slowly a loaded machine sends them."""
    frozen = utcnow()
    # 200 requests at once queue for the pool's connections; on a loaded 2-core machine the
    # last of them can wait past the default 3 s pool deadline and get 503. These tests count
    # the limiter, not deadlines (test_faults does those), so the queue may take its time.
    settings = settings.model_copy(update={"db_pool_timeout_seconds": 60.0})
    local = build_local_server(settings, database_url=settings.database_url, clock=lambda: frozen)
    await bootstrap(local.runtime)
    yield local
    await local.runtime.close()


async def test_exactly_sixty_of_200_concurrent_requests_by_a_free_user_succeed(client, create_user):
    user = await create_user("busy", tier="free")

    responses = await asyncio.gather(
        *[client.get("/auth/keys", headers=user.headers) for _ in range(200)]
    )

    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 60
    assert statuses.count(429) == 140


async def test_exactly_sixty_of_200_concurrent_requests_by_a_free_users_key_succeed(
    client, admin, create_user
):
    # The key lookup counts the request in the same statement: still exact under a burst.
    user = await create_user("keyed", tier="free")
    created = await client.post(
        "/auth/keys",
        headers=admin.headers,
        json={"name": "k", "scopes": ["workflow:read"], "user_id": user.user_id},
    )
    assert created.status_code == 201, created.text
    headers = {"X-API-Key": created.json()["key"]}

    responses = await asyncio.gather(
        *[client.get("/workflows", headers=headers) for _ in range(200)]
    )

    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 60
    assert statuses.count(429) == 140
    assert {r.headers["X-RateLimit-Limit"] for r in responses} == {"60"}


async def test_every_authenticated_response_reports_the_limit(client, create_user, server):
    user = await create_user("counted", tier="free")

    first = await client.get("/auth/keys", headers=user.headers)
    second = await client.get("/auth/keys", headers=user.headers)

    assert first.headers["X-RateLimit-Limit"] == "60"
    assert int(first.headers["X-RateLimit-Remaining"]) == 59
    assert int(second.headers["X-RateLimit-Remaining"]) == 58
    reset = int(first.headers["X-RateLimit-Reset"])
    now = server.runtime.clock().timestamp()
    assert now < reset <= now + 60
    # Error responses carry them too.
    forbidden = await client.get("/admin/users", headers=user.headers)
    assert forbidden.status_code == 403
    assert forbidden.headers["X-RateLimit-Remaining"] == "57"


async def test_the_429_has_retry_after_and_the_documented_details(client, create_user):
    user = await create_user("limited", tier="free")
    for _ in range(60):
        assert (await client.get("/auth/keys", headers=user.headers)).status_code == 200

    refused = await client.get("/auth/keys", headers=user.headers)

    assert refused.status_code == 429
    body = refused.json()
    assert body["code"] == "rate_limited"
    assert body["details"]["limit"] == 60
    assert body["details"]["window"] == "1 minute"
    assert 1 <= body["details"]["retry_after"] <= 60
    assert refused.headers["Retry-After"] == str(body["details"]["retry_after"])
    assert refused.headers["X-RateLimit-Remaining"] == "0"


async def test_pro_tier_gets_the_pro_limit(client, create_user):
    user = await create_user("pro", tier="pro")
    response = await client.get("/auth/keys", headers=user.headers)
    assert response.headers["X-RateLimit-Limit"] == "600"


async def test_each_api_key_has_its_own_budget(client, admin):
    key = (
        await client.post(
            "/auth/keys", headers=admin.headers, json={"name": "k", "scopes": ["admin"]}
        )
    ).json()["key"]

    by_key = await client.get("/auth/keys", headers={"X-API-Key": key})
    by_token = await client.get("/auth/keys", headers=admin.headers)

    # The admin is enterprise; the key's counter starts fresh, apart from the session's.
    assert by_key.headers["X-RateLimit-Limit"] == "6000"
    assert by_key.headers["X-RateLimit-Remaining"] == "5999"
    assert int(by_token.headers["X-RateLimit-Remaining"]) < 5999


async def test_public_endpoints_are_limited_per_client_ip(server):
    def client_from(ip: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=server.app, client=(ip, 1000))
        return httpx.AsyncClient(transport=transport, base_url="http://t/api/v1")

    async with client_from("192.0.2.1") as first, client_from("192.0.2.2") as second:
        statuses = [(await first.get("/health")).status_code for _ in range(61)]
        other = await second.get("/health")

    assert statuses[:60] == [200] * 60
    assert statuses[60] == 429
    assert other.status_code == 200
    assert other.headers["X-RateLimit-Remaining"] == "59"


async def test_failed_authentication_counts_against_the_client_ip(server):
    transport = httpx.ASGITransport(app=server.app, client=("192.0.2.9", 1000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t/api/v1") as http:
        results = [
            (await http.get("/auth/keys", headers={"X-API-Key": "llo_sk_guess"})).status_code
            for _ in range(61)
        ]
    assert results[:60] == [401] * 60
    assert results[60] == 429


async def test_old_windows_are_swept_so_the_counters_table_stays_small(server):
    from datetime import timedelta

    from llm_orchestrator.ratelimit.limiter import DEFAULT_TIERS, RateLimiter
    from llm_orchestrator.store.rate_limits import RateLimitRepository

    async with server.runtime.db.connection() as conn:
        await conn.execute(
            "INSERT INTO rate_limit_counters (subject, window_name, window_start, hits)"
            " VALUES ('user:gone', 'day', %s, 5)",
            (utcnow() - timedelta(days=3),),
        )
    limiter = RateLimiter(
        RateLimitRepository(server.runtime.db), DEFAULT_TIERS, utcnow, purge_every=2
    )

    await limiter.check("user:now", "free")
    async with server.runtime.db.connection() as conn:
        before = await (
            await conn.execute("SELECT count(*) AS n FROM rate_limit_counters")
        ).fetchone()
    await limiter.check("user:now", "free")  # the second check sweeps
    async with server.runtime.db.connection() as conn:
        cur = await conn.execute("SELECT DISTINCT subject FROM rate_limit_counters")
        subjects = {row["subject"] for row in await cur.fetchall()}

    assert before["n"] >= 4
    assert subjects == {"user:now"}


async def _fill_window(server, subject: str, window: str, seconds: int, hits: int) -> None:
    """Put ``hits`` in the current ``window`` of ``subject`` (by the server's clock)."""
    now = server.runtime.clock().timestamp()
    async with server.runtime.db.connection() as conn:
        await conn.execute(
            "INSERT INTO rate_limit_counters (subject, window_name, window_start, hits)"
            " VALUES (%s, %s, to_timestamp(%s), %s)",
            (subject, window, now - now % seconds, hits),
        )


async def test_the_hour_window_refuses_with_window_1_hour(client, create_user, server):
    user = await create_user("hourly", tier="free")
    await _fill_window(server, f"user:{user.user_id}", "hour", 3600, 1000)

    refused = await client.get("/auth/keys", headers=user.headers)

    assert refused.status_code == 429
    details = refused.json()["details"]
    assert details["window"] == "1 hour" and details["limit"] == 1000
    assert 1 <= details["retry_after"] <= 3600
    assert refused.headers["Retry-After"] == str(details["retry_after"])
    assert refused.headers["X-RateLimit-Limit"] == "1000"
    assert refused.headers["X-RateLimit-Remaining"] == "0"


async def test_the_day_window_refuses_with_window_1_day(client, create_user, server):
    user = await create_user("daily", tier="free")
    await _fill_window(server, f"user:{user.user_id}", "day", 86400, 10_000)

    refused = await client.get("/auth/keys", headers=user.headers)

    assert refused.status_code == 429
    details = refused.json()["details"]
    assert details["window"] == "1 day" and details["limit"] == 10_000
    assert 1 <= details["retry_after"] <= 86400


async def test_the_headers_report_the_window_closest_to_its_limit(client, create_user, server):
    user = await create_user("nearly", tier="free")
    await _fill_window(server, f"user:{user.user_id}", "hour", 3600, 990)

    response = await client.get("/auth/keys", headers=user.headers)

    # 9 of 1,000 left this hour is tighter than 59 of 60 this minute.
    assert response.status_code == 200
    assert response.headers["X-RateLimit-Limit"] == "1000"
    assert response.headers["X-RateLimit-Remaining"] == "9"


async def test_enterprise_limits_come_from_the_environment(
    settings, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("LLMO_RATE_LIMIT_ENTERPRISE_PER_MINUTE", "100")
    monkeypatch.setenv("LLMO_RATE_LIMIT_ENTERPRISE_PER_HOUR", "3")
    monkeypatch.setenv("LLMO_RATE_LIMIT_ENTERPRISE_PER_DAY", "1000")
    overridden = Settings(
        **settings.model_dump(
            exclude={
                "rate_limit_enterprise_per_minute",
                "rate_limit_enterprise_per_hour",
                "rate_limit_enterprise_per_day",
            }
        )
    )
    frozen = utcnow()
    local = build_local_server(
        overridden, database_url=overridden.database_url, clock=lambda: frozen
    )
    await bootstrap(local.runtime)
    try:
        transport = httpx.ASGITransport(app=local.app, client=("203.0.113.8", 1000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t/api/v1") as http:
            login = await http.post(
                "/auth/login", json={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
            )
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            statuses = [(await http.get("/auth/keys", headers=headers)) for _ in range(4)]
    finally:
        await local.runtime.close()

    # The bootstrap admin is enterprise: three requests an hour, as configured.
    assert [r.status_code for r in statuses] == [200, 200, 200, 429]
    assert statuses[0].headers["X-RateLimit-Limit"] == "3"
    assert statuses[3].json()["details"]["window"] == "1 hour"
    assert statuses[3].json()["details"]["limit"] == 3


async def test_a_count_commits_without_waiting_for_the_wal_flush_and_nothing_after_it(server):
    # Every authenticated request counts itself; waiting for a WAL flush on each held the
    # caller's counter rows locked meanwhile (migration 0089). Only the counting
    # transaction commits asynchronously: the connection's next one is synchronous again.
    async with server.runtime.db.connection() as conn:
        # The test server commits asynchronously throughout (tests/conftest.py): this
        # connection waits for flushes, as a production server's do.
        await conn.execute("SET synchronous_commit = on")
        try:
            async with conn.transaction():
                await conn.execute(
                    "SELECT rate_limit_hit('user:flush', ARRAY['minute'], ARRAY[now()], ARRAY[5])"
                )
                during = await (await conn.execute("SHOW synchronous_commit")).fetchone()
            after = await (await conn.execute("SHOW synchronous_commit")).fetchone()
        finally:
            await conn.execute("RESET synchronous_commit")

    assert during["synchronous_commit"] == "off"
    assert after["synchronous_commit"] == "on"
