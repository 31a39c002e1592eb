"""GET /admin/stats and GET /admin/config, and who may call the system endpoints."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from llm_orchestrator import __version__
from llm_orchestrator.clock import utcnow
from llm_orchestrator.config import Settings
from llm_orchestrator.server import LocalServer, bootstrap, build_local_server
from tests.integration.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, JWT_SECRET, Session
from tests.integration.metrics_support import insert_execution, insert_workflow

STATS_FIELDS = {
    "spend_today_usd",
    "spend_month_usd",
    "total_workflows",
    "total_executions",
    "executions_by_status",
    "active_users",
    "api_keys_count",
    "avg_execution_time_ms",
    "uptime_seconds",
}


async def stats(client: httpx.AsyncClient, admin: Any) -> dict[str, Any]:
    response = await client.get("/admin/stats", headers=admin.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_stats_of_a_fresh_system_has_every_field_with_zero_counts(
    client: httpx.AsyncClient, admin: Any
) -> None:
    body = await stats(client, admin)

    assert set(body) == STATS_FIELDS
    assert body["total_workflows"] == 0
    assert body["total_executions"] == 0
    assert body["executions_by_status"] == {"pending": 0, "running": 0, "completed": 0, "failed": 0}
    assert body["active_users"] == 1  # the admin, who just logged in
    assert body["api_keys_count"] == 0
    assert body["avg_execution_time_ms"] == 0
    assert body["uptime_seconds"] >= 0
    assert body["spend_today_usd"] == body["spend_month_usd"] == 0


async def test_stats_count_workflows_and_executions_by_status(
    client: httpx.AsyncClient, admin: Any, server: LocalServer
) -> None:
    db = server.runtime.db
    first = await insert_workflow(db, admin.user_id, "a")
    await insert_workflow(db, admin.user_id, "b")
    await insert_execution(db, first, admin.user_id, "completed", duration_ms=1000)
    await insert_execution(db, first, admin.user_id, "completed", duration_ms=3000)
    await insert_execution(db, first, admin.user_id, "failed", duration_ms=50)
    await insert_execution(db, first, admin.user_id, "running")
    await insert_execution(db, first, admin.user_id, "cancelled")

    body = await stats(client, admin)

    assert body["total_workflows"] == 2
    assert body["total_executions"] == 5
    assert body["executions_by_status"] == {
        "pending": 0,
        "running": 1,
        "completed": 2,
        "failed": 1,
        "cancelled": 1,
    }
    assert body["avg_execution_time_ms"] == pytest.approx(2000)


async def test_active_users_logged_in_or_used_a_key_within_30_days(
    client: httpx.AsyncClient, admin: Any, server: LocalServer, create_user: Any
) -> None:
    await create_user("recent")
    stale = await create_user("stale")
    keyed = await create_user("keyed")
    created = await client.post(
        "/auth/keys",
        headers=admin.headers,
        json={"name": "ci", "scopes": ["workflow:read"], "user_id": keyed.user_id},
    )
    assert created.status_code == 201, created.text
    async with server.runtime.db.connection() as conn:
        await conn.execute(
            "UPDATE users SET last_login = now() - interval '40 days' WHERE id IN (%s, %s)",
            (stale.user_id, keyed.user_id),
        )
    # Using the key makes "keyed" active again although their login is old.
    used = await client.get("/auth/keys", headers={"X-API-Key": created.json()["key"]})
    assert used.status_code != 401, used.text

    body = await stats(client, admin)

    assert body["active_users"] == 3  # admin, recent, keyed


async def test_api_keys_count_is_keys_neither_revoked_nor_expired(
    client: httpx.AsyncClient, admin: Any, server: LocalServer
) -> None:
    ids = []
    for name in ("one", "two", "three"):
        response = await client.post(
            "/auth/keys", headers=admin.headers, json={"name": name, "scopes": ["admin"]}
        )
        ids.append(response.json()["id"])
    await client.delete(f"/auth/keys/{ids[0]}", headers=admin.headers)
    async with server.runtime.db.connection() as conn:
        await conn.execute(
            "UPDATE api_keys SET expires_at = now() - interval '1 minute' WHERE id = %s",
            (ids[1],),
        )

    assert (await stats(client, admin))["api_keys_count"] == 1


class MovableClock:
    """A wall clock that stands still until the test moves it."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def test_uptime_is_this_process_uptime(settings: Settings) -> None:
    clock = MovableClock()
    local = build_local_server(settings, database_url=settings.database_url, clock=clock)
    await bootstrap(local.runtime)
    transport = httpx.ASGITransport(app=local.app, client=("203.0.113.7", 4242))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t/api/v1") as http:
            login = await http.post(
                "/auth/login", json={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
            )
            admin = Session(login.json()["user_id"], login.json()["access_token"], "")
            at_start = (await stats(http, admin))["uptime_seconds"]
            clock.advance(120)
            later = (await stats(http, admin))["uptime_seconds"]
    finally:
        await local.runtime.close()

    assert (at_start, later) == (0, 120)


async def test_config_reports_version_environment_and_features(
    client: httpx.AsyncClient, admin: Any
) -> None:
    response = await client.get("/admin/config", headers=admin.headers)

    assert response.status_code == 200
    assert response.json() == {
        "version": __version__,
        "environment": "local",
        "features": {
            "state_persistence": True,
            "audit_logging": True,
            "rate_limiting": True,
            "engine": "local",
            "secrets_backend": "db",
        },
    }
    assert JWT_SECRET not in response.text and ADMIN_PASSWORD not in response.text


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/admin/stats", None),
        ("GET", "/admin/config", None),
        ("POST", "/admin/secrets", {"key": "OPENAI_API_KEY", "value": "sk-not-allowed"}),
    ],
)
async def test_system_endpoints_need_admin_access(
    client: httpx.AsyncClient,
    create_user: Any,
    server: LocalServer,
    method: str,
    path: str,
    body: dict[str, str] | None,
) -> None:
    developer = await create_user("developer")

    anonymous = await client.request(method, path, json=body)
    refused = await client.request(method, path, json=body, headers=developer.headers)

    assert anonymous.status_code == 401
    assert refused.status_code == 403
    assert refused.json()["code"] == "forbidden"
    assert await server.runtime.secrets.names() == []
