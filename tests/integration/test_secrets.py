"""POST /admin/secrets, the encrypted store behind it, and provider credential resolution."""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from llm_orchestrator.config import Settings
from llm_orchestrator.providers import ChatRequest, OpenAIProvider
from llm_orchestrator.runtime import build_runtime
from llm_orchestrator.server import LocalServer
from tests.fakes.openai_server import FakeOpenAI

SECRET_VALUE = "sk-stored-secret-7f3a9c1e5b2d4680"
ENV_VALUE = "sk-from-the-environment-0000"


async def set_secret(
    client: httpx.AsyncClient, admin: Any, key: str, value: str, **extra: Any
) -> httpx.Response:
    return await client.post(
        "/admin/secrets", headers=admin.headers, json={"key": key, "value": value, **extra}
    )


async def raw_rows(server: LocalServer, table: str) -> str:
    async with server.runtime.db.connection() as conn:
        cur = await conn.execute(f"SELECT {table}::text AS row FROM {table}")
        return "\n".join(row["row"] for row in await cur.fetchall())


async def test_storing_a_secret_answers_its_name_only(
    client: httpx.AsyncClient, admin: Any
) -> None:
    response = await set_secret(client, admin, "OPENAI_API_KEY", SECRET_VALUE, ttl_seconds=86400)

    assert response.status_code == 200
    assert response.json() == {"success": True, "key": "OPENAI_API_KEY"}


async def test_a_stored_secret_is_what_the_resolver_returns_and_beats_the_environment(
    client: httpx.AsyncClient, admin: Any, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", ENV_VALUE)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert (await server.runtime.credentials.resolve("openai")).api_key == ENV_VALUE

    await set_secret(client, admin, "OPENAI_API_KEY", SECRET_VALUE)
    credentials = await server.runtime.credentials.resolve("openai")

    assert credentials.api_key == SECRET_VALUE
    assert credentials.base_url == "http://127.0.0.1:9/v1"  # still from the environment


async def test_setting_a_secret_again_replaces_it(
    client: httpx.AsyncClient, admin: Any, server: LocalServer
) -> None:
    await set_secret(client, admin, "ANTHROPIC_API_KEY", "sk-ant-old-value")
    await set_secret(client, admin, "ANTHROPIC_API_KEY", "sk-ant-new-value")

    assert await server.runtime.secrets.get("ANTHROPIC_API_KEY") == "sk-ant-new-value"
    assert await server.runtime.secrets.names() == ["ANTHROPIC_API_KEY"]


async def test_an_expired_secret_is_not_served(
    client: httpx.AsyncClient,
    admin: Any,
    server: LocalServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", ENV_VALUE)
    await set_secret(client, admin, "OPENAI_API_KEY", SECRET_VALUE, ttl_seconds=60)
    async with server.runtime.db.connection() as conn:
        await conn.execute("UPDATE secrets SET expires_at = now() - interval '1 second'")

    assert await server.runtime.secrets.get("OPENAI_API_KEY") is None
    assert await server.runtime.secrets.names() == []
    assert (await server.runtime.credentials.resolve("openai")).api_key == ENV_VALUE


async def test_secrets_are_encrypted_at_rest(
    client: httpx.AsyncClient, admin: Any, server: LocalServer
) -> None:
    await set_secret(client, admin, "OPENAI_API_KEY", SECRET_VALUE)

    async with server.runtime.db.connection() as conn:
        cur = await conn.execute("SELECT ciphertext FROM secrets WHERE name = 'OPENAI_API_KEY'")
        row = await cur.fetchone()
    assert row is not None
    assert SECRET_VALUE.encode() not in bytes(row["ciphertext"])
    assert SECRET_VALUE not in await raw_rows(server, "secrets")


async def test_the_local_key_lives_in_the_data_dir_and_serves_every_process(
    client: httpx.AsyncClient, admin: Any, settings: Settings
) -> None:
    await set_secret(client, admin, "CO_API_KEY", SECRET_VALUE)

    key_file = settings.data_dir / "secrets.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    other = build_runtime(settings, database_url=settings.database_url, environ={})
    try:
        assert (await other.credentials.resolve("cohere")).api_key == SECRET_VALUE
    finally:
        await other.close()


async def test_the_value_appears_in_no_response_audit_row_or_log_line(
    client: httpx.AsyncClient,
    admin: Any,
    server: LocalServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    responses = [await set_secret(client, admin, "OPENAI_API_KEY", SECRET_VALUE)]
    responses.append(
        await client.get("/audit/events", headers=admin.headers, params={"event_type": "secret"})
    )
    responses.append(await client.get("/admin/config", headers=admin.headers))
    responses.append(await client.get("/admin/stats", headers=admin.headers))
    responses.append(await client.get("/metrics"))
    await server.runtime.credentials.resolve("openai")

    for response in responses:
        assert response.status_code == 200
        assert SECRET_VALUE not in response.text
        assert SECRET_VALUE not in str(response.headers)
    assert SECRET_VALUE not in await raw_rows(server, "audit_events")
    assert SECRET_VALUE not in caplog.text
    assert "OPENAI_API_KEY" in caplog.text  # the name is logged, so the log line exists


async def test_setting_a_secret_is_audited_by_name(client: httpx.AsyncClient, admin: Any) -> None:
    await set_secret(client, admin, "OPENAI_API_KEY", SECRET_VALUE, ttl_seconds=3600)

    response = await client.get(
        "/audit/events", headers=admin.headers, params={"event_type": "secret"}
    )

    [event] = response.json()["events"]
    assert event["action"] == "Set secret"
    assert event["resource_type"] == "secret"
    assert event["resource_id"] == "OPENAI_API_KEY"
    assert event["user_id"] == admin.user_id
    assert event["result"] == "success"
    assert event["details"]["ttl_seconds"] == 3600


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"key": "1_STARTS_WITH_DIGIT", "value": SECRET_VALUE}, "key"),
        ({"key": "HAS-DASH", "value": SECRET_VALUE}, "key"),
        ({"key": "", "value": SECRET_VALUE}, "key"),
        ({"key": "K" * 129, "value": SECRET_VALUE}, "key"),
        ({"value": SECRET_VALUE}, "key"),
        ({"key": "OPENAI_API_KEY", "value": ""}, "value"),
        ({"key": "OPENAI_API_KEY", "value": "   "}, "value"),
        ({"key": "OPENAI_API_KEY"}, "value"),
        ({"key": "OPENAI_API_KEY", "value": 12345}, "value"),
        ({"key": "OPENAI_API_KEY", "value": SECRET_VALUE, "ttl_seconds": 0}, "ttl_seconds"),
        ({"key": "OPENAI_API_KEY", "value": SECRET_VALUE, "ttl_seconds": 31536001}, "ttl_seconds"),
        ({"key": "OPENAI_API_KEY", "value": SECRET_VALUE, "ttl_seconds": "soon"}, "ttl_seconds"),
        ({"key": "OPENAI_API_KEY", "value": SECRET_VALUE, "note": "x"}, "note"),
    ],
)
async def test_an_invalid_secret_body_is_a_400_naming_the_field(
    client: httpx.AsyncClient, admin: Any, server: LocalServer, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/admin/secrets", headers=admin.headers, json=body)

    assert response.status_code == 400
    payload = response.json()
    assert payload["code"] == "validation_error"
    assert [e["field"] for e in payload["details"]["errors"]] == [field]
    assert SECRET_VALUE not in response.text
    assert await server.runtime.secrets.names() == []


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.start(api_key=SECRET_VALUE) as fake:
        yield fake


async def test_the_provider_receives_the_stored_key_not_the_environments(
    client: httpx.AsyncClient,
    admin: Any,
    server: LocalServer,
    fake_openai: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The fake answers 401 to any key but the stored one.
    monkeypatch.setenv("OPENAI_API_KEY", ENV_VALUE)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    await set_secret(client, admin, "OPENAI_API_KEY", SECRET_VALUE)
    provider = OpenAIProvider(server.runtime.credentials, timeout_seconds=5.0)
    try:
        result = await provider.complete(ChatRequest(model="gpt-4o-mini", prompt="hello"))
    finally:
        await provider.aclose()

    assert result.text
    assert [r.has_auth for r in fake_openai.requests] == [True]
