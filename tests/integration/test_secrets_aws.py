"""LLMO_SECRETS_BACKEND=aws: POST /admin/secrets into Secrets Manager (moto), read back
through Powertools with a bounded cache, and never seen in a response or a log line."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import httpx
import pytest

from llm_orchestrator.config import Settings
from llm_orchestrator.secrets.aws_store import SecretsManagerStore
from llm_orchestrator.server import LocalServer, bootstrap, build_local_server
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import Session
from tests.integration.execution_support import create_workflow, llm_step, wait_for
from tests.moto_support import REGION, mocked_aws

SECRET_VALUE = "sk-in-secrets-manager-5e1d7c3b9a"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with mocked_aws(monkeypatch):
        yield boto3.client("secretsmanager", region_name=REGION)


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.start(api_key=SECRET_VALUE) as fake:
        yield fake


@pytest.fixture
async def server(
    settings: Settings, aws: Any, fake_openai: FakeOpenAI
) -> AsyncIterator[LocalServer]:
    """The API on Secrets Manager; the provider's key is in no environment, only stored."""
    aws_settings = settings.model_copy(update={"secrets_backend": "aws"})
    local = build_local_server(
        aws_settings,
        database_url=settings.database_url,
        environ={"OPENAI_BASE_URL": fake_openai.base_url},
    )
    await bootstrap(local.runtime)
    yield local
    await local.runtime.close()


class Clocks:
    def __init__(self) -> None:
        self.wall = datetime(2026, 1, 1, tzinfo=UTC)
        self.mono = 1000.0

    def now(self) -> datetime:
        return self.wall

    def monotonic(self) -> float:
        return self.mono


async def set_secret(
    client: httpx.AsyncClient, admin: Session, key: str, value: str, **extra: Any
) -> httpx.Response:
    return await client.post(
        "/admin/secrets", headers=admin.headers, json={"key": key, "value": value, **extra}
    )


async def test_a_stored_secret_lands_in_secrets_manager_and_runs_a_step(
    client: httpx.AsyncClient, admin: Session, aws: Any, fake_openai: FakeOpenAI
) -> None:
    response = await set_secret(client, admin, "OPENAI_API_KEY", SECRET_VALUE, ttl_seconds=3600)
    assert response.json() == {"success": True, "key": "OPENAI_API_KEY"}

    stored = json.loads(aws.get_secret_value(SecretId="llmo/OPENAI_API_KEY")["SecretString"])
    assert stored["value"] == SECRET_VALUE and stored["expires_at"] is not None
    workflow_id = await create_workflow(client, admin, [llm_step("a", "Hi {{text}}", "out")])
    started = await client.post(
        f"/workflows/{workflow_id}/execute",
        headers=admin.headers,
        json={"inputs": {"text": "there"}},
    )
    finished = await wait_for(client, admin, workflow_id, started.json()["execution_id"])
    assert finished["status"] == "completed", finished["error"]
    assert [r.has_auth for r in fake_openai.requests] == [True]


async def test_replacing_a_secret_applies_at_once_in_this_process(
    client: httpx.AsyncClient, admin: Session, server: LocalServer
) -> None:
    await set_secret(client, admin, "CO_API_KEY", "first-value")
    assert await server.runtime.secrets.get("CO_API_KEY") == "first-value"

    await set_secret(client, admin, "CO_API_KEY", "second-value")

    assert await server.runtime.secrets.get("CO_API_KEY") == "second-value"
    assert await server.runtime.secrets.names() == ["CO_API_KEY"]


async def test_the_value_appears_in_no_response_audit_row_or_log_line(
    client: httpx.AsyncClient,
    admin: Session,
    server: LocalServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    responses = [await set_secret(client, admin, "OPENAI_API_KEY", SECRET_VALUE)]
    responses.append(await set_secret(client, admin, "OPENAI_API_KEY", SECRET_VALUE))
    responses.append(
        await client.get("/audit/events", headers=admin.headers, params={"event_type": "secret"})
    )
    responses.append(await client.get("/admin/config", headers=admin.headers))
    assert (await server.runtime.credentials.resolve("openai")).api_key == SECRET_VALUE

    for response in responses:
        assert response.status_code == 200
        assert SECRET_VALUE not in response.text
    assert responses[3].json()["features"]["secrets_backend"] == "aws"
    async with server.runtime.db.connection() as conn:
        cur = await conn.execute("SELECT audit_events::text AS row FROM audit_events")
        assert SECRET_VALUE not in "".join(r["row"] for r in await cur.fetchall())
    assert SECRET_VALUE not in caplog.text
    assert "OPENAI_API_KEY" in caplog.text


async def test_an_expired_secret_is_not_served(aws: Any) -> None:
    clocks = Clocks()
    store = SecretsManagerStore(prefix="llmo/", clock=clocks.now, monotonic=clocks.monotonic)
    await store.put("OPENAI_API_KEY", SECRET_VALUE, ttl=timedelta(seconds=60))
    assert await store.get("OPENAI_API_KEY") == SECRET_VALUE
    assert await store.names() == ["OPENAI_API_KEY"]

    clocks.wall += timedelta(seconds=61)

    assert await store.get("OPENAI_API_KEY") is None
    assert await store.names() == []
    tags = aws.describe_secret(SecretId="llmo/OPENAI_API_KEY")["Tags"]
    assert {"Key": "llmo:expires-at", "Value": "2026-01-01T00:01:00+00:00"} in tags


async def test_reads_are_cached_for_a_bounded_time_and_a_write_invalidates(aws: Any) -> None:
    clocks = Clocks()
    store = SecretsManagerStore(
        prefix="llmo/", clock=clocks.now, monotonic=clocks.monotonic, cache_seconds=60
    )
    await store.put("CO_API_KEY", "v1")
    assert await store.get("CO_API_KEY") == "v1"

    # Changed by another process (another Lambda container): served from cache for a while.
    aws.put_secret_value(SecretId="llmo/CO_API_KEY", SecretString="v2-elsewhere")
    assert await store.get("CO_API_KEY") == "v1"
    clocks.mono += 60
    assert await store.get("CO_API_KEY") == "v2-elsewhere"

    await store.put("CO_API_KEY", "v3")
    assert await store.get("CO_API_KEY") == "v3"


async def test_the_cache_holds_a_bounded_number_of_names_misses_included(aws: Any) -> None:
    clocks = Clocks()
    store = SecretsManagerStore(
        prefix="llmo/", clock=clocks.now, monotonic=clocks.monotonic, cache_size=2
    )
    await store.put("A_KEY", "a")

    found = await store.get_many(["A_KEY", "B_KEY", "C_KEY"])

    assert found == {"A_KEY": "a"}
    assert len(store.cache) == 2
    aws.create_secret(Name="llmo/B_KEY", SecretString="b-created-meanwhile")
    assert await store.get("B_KEY") is None, "a cached miss is served like a value"


async def test_a_plain_secret_made_outside_the_api_is_served_as_is(aws: Any) -> None:
    aws.create_secret(Name="team/OPENAI_BASE_URL", SecretString="http://proxy.internal/v1")
    store = SecretsManagerStore(prefix="team/", clock=lambda: datetime.now(UTC))

    assert await store.get_many(["OPENAI_BASE_URL", "OPENAI_API_KEY"]) == {
        "OPENAI_BASE_URL": "http://proxy.internal/v1"
    }


async def test_an_invalid_secret_is_refused_before_secrets_manager_is_called(
    client: httpx.AsyncClient, admin: Session, aws: Any
) -> None:
    response = await set_secret(client, admin, "BAD-NAME", SECRET_VALUE)

    assert response.status_code == 400
    assert aws.list_secrets()["SecretList"] == []
