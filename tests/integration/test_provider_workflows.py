"""Anthropic and Cohere steps through the API: the official SDKs against the fake servers.

Each error mapping as a user sees it (an execution's status and error), retries counted
at the fake, usage recorded per step, capability refusals at create time, and marker
secret values that never surface in a response, a log line or the database's state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from llm_orchestrator.config import Settings
from llm_orchestrator.server import LocalServer, bootstrap, build_local_server
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.cohere_server import FakeCohere
from tests.fakes.embeddings import count_tokens, fake_embedding
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import Session
from tests.integration.execution_support import (
    FAST_RETRY,
    create_workflow,
    get_status,
    start_execution,
    wait_for,
)
from tests.integration.llm_support import (
    ANTHROPIC_KEY,
    COHERE_KEY,
    OPENAI_KEY,
    _fresh_fakes,
    anthropic_fake,
    cohere_fake,
    openai_fake,
)
from tests.support import free_port

__all__ = ["_fresh_fakes", "anthropic_fake", "cohere_fake", "openai_fake"]


@pytest.fixture
async def server(
    settings: Settings,
    anthropic_fake: FakeAnthropic,
    cohere_fake: FakeCohere,
    openai_fake: FakeOpenAI,
) -> AsyncIterator[LocalServer]:
    """The API with every provider pointed at its fake; keys come from the secrets store."""
    environ = {
        "ANTHROPIC_BASE_URL": anthropic_fake.base_url,
        "CO_API_URL": cohere_fake.base_url,
        "OPENAI_BASE_URL": openai_fake.base_url,
    }
    local = build_local_server(settings, database_url=settings.database_url, environ=environ)
    await bootstrap(local.runtime)
    yield local
    await local.runtime.close()


@pytest.fixture
async def keys(client: httpx.AsyncClient, admin: Session) -> None:
    for name, value in (
        ("ANTHROPIC_API_KEY", ANTHROPIC_KEY),
        ("CO_API_KEY", COHERE_KEY),
        ("OPENAI_API_KEY", OPENAI_KEY),
    ):
        await set_secret(client, admin, name, value)


async def set_secret(client: httpx.AsyncClient, admin: Session, key: str, value: str) -> None:
    response = await client.post(
        "/admin/secrets", headers=admin.headers, json={"key": key, "value": value}
    )
    assert response.status_code == 200, response.text


def llm(step_id: str, provider: str, prompt: str, output: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "llm",
        "provider": provider,
        "model": f"{provider}-test-model",
        "prompt": prompt,
        "output": [output],
        "retry": FAST_RETRY,
        **extra,
    }


def embed(step_id: str, provider: str, text: str, output: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "embed",
        "provider": provider,
        "model": "embed-test-model",
        "input": text,
        "output": [output],
        "retry": FAST_RETRY,
        **extra,
    }


async def run(
    client: httpx.AsyncClient,
    session: Session,
    steps: list[dict[str, Any]],
    inputs: dict[str, Any],
    *,
    timeout: float = 30.0,
) -> dict[str, Any]:
    workflow_id = await create_workflow(client, session, steps)
    execution_id = await start_execution(client, session, workflow_id, inputs)
    return await wait_for(client, session, workflow_id, execution_id, timeout=timeout)


async def step_run(server: LocalServer, execution_id: str, step_id: str) -> dict[str, Any]:
    async with server.runtime.db.connection() as conn:
        cursor = await conn.execute(
            "SELECT provider, attempts, input_tokens, output_tokens, latency_ms, error"
            " FROM step_runs WHERE execution_id = %s AND step_id = %s",
            (execution_id, step_id),
        )
        row = await cursor.fetchone()
    assert row is not None
    return dict(row)


# -- success -------------------------------------------------------------------------------


@pytest.mark.usefixtures("keys")
async def test_anthropic_then_cohere_run_end_to_end_with_usage_recorded(
    client: httpx.AsyncClient,
    admin: Session,
    server: LocalServer,
    anthropic_fake: FakeAnthropic,
    cohere_fake: FakeCohere,
) -> None:
    anthropic_fake.responder = lambda body: "a short summary"
    cohere_fake.responder = lambda body: "positive"
    steps = [
        llm("summary", "anthropic", "Summarise: {{text}}", "summary", system="be brief"),
        llm("verdict", "cohere", "Sentiment of: {{summary}}", "sentiment", depends_on=["summary"]),
    ]

    final = await run(client, admin, steps, {"text": "Great product, works well"})

    assert final["status"] == "completed", final
    assert final["context"]["outputs"] == {"summary": "a short summary", "sentiment": "positive"}
    [to_anthropic] = anthropic_fake.requests_to("/v1/messages")
    assert to_anthropic.body["max_tokens"] == 4096
    assert to_anthropic.body["system"] == "be brief"
    [to_cohere] = cohere_fake.requests_to("/v2/chat")
    assert to_cohere.body["messages"] == [
        {"role": "user", "content": "Sentiment of: a short summary"}
    ]
    summary = await step_run(server, final["id"], "summary")
    assert summary["provider"] == "anthropic" and summary["attempts"] == 1
    assert (summary["input_tokens"], summary["output_tokens"]) == (7, 3)
    assert summary["latency_ms"] > 0
    verdict = await step_run(server, final["id"], "verdict")
    assert (verdict["provider"], verdict["output_tokens"]) == ("cohere", 1)
    metrics = (await client.get("/metrics")).text
    assert 'orchestrator_provider_tokens_total{direction="output",provider="anthropic"} 3.0' in (
        metrics
    )
    assert 'orchestrator_provider_tokens_total{direction="output",provider="cohere"} 1.0' in (
        metrics
    )


@pytest.mark.usefixtures("keys")
async def test_cohere_embeds_a_list_as_documents_and_a_string_as_a_query(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, cohere_fake: FakeCohere
) -> None:
    documents = ["Paris is the capital of France", "The Nile is a river in Africa"]
    steps = [
        embed("docs", "cohere", "{{documents}}", "doc_vectors"),
        embed("query", "cohere", "{{question}}", "query_vector"),
        embed("clusters", "cohere", "{{question}}", "cluster_vector", input_type="clustering"),
    ]

    final = await run(
        client, admin, steps, {"documents": documents, "question": "capital of France?"}
    )

    assert final["status"] == "completed", final
    outputs = final["context"]["outputs"]
    assert outputs["doc_vectors"] == [fake_embedding(d) for d in documents]
    assert outputs["query_vector"] == fake_embedding("capital of France?")
    sent = sorted((c.body["input_type"], c.body["texts"]) for c in cohere_fake.requests)
    assert sent == [
        ("clustering", ["capital of France?"]),
        ("search_document", documents),
        ("search_query", ["capital of France?"]),
    ]
    usage = await step_run(server, final["id"], "docs")
    assert usage["input_tokens"] == sum(count_tokens(d) for d in documents)
    assert usage["attempts"] == 1


@pytest.mark.usefixtures("keys")
async def test_openai_embeds_a_list_of_documents_given_as_objects(
    client: httpx.AsyncClient, admin: Session, openai_fake: FakeOpenAI
) -> None:
    documents = [{"id": "d1", "text": "first doc"}, {"text": "second doc", "metadata": {}}]

    final = await run(
        client,
        admin,
        [embed("docs", "openai", "{{documents}}", "vectors")],
        {"documents": documents},
    )

    assert final["status"] == "completed", final
    assert final["context"]["outputs"]["vectors"] == [
        fake_embedding("first doc"),
        fake_embedding("second doc"),
    ]


@pytest.mark.usefixtures("keys")
async def test_embedding_a_list_of_non_texts_fails_with_a_clear_error(
    client: httpx.AsyncClient, admin: Session, openai_fake: FakeOpenAI
) -> None:
    final = await run(
        client, admin, [embed("docs", "openai", "{{documents}}", "vectors")], {"documents": [1, 2]}
    )

    assert final["status"] == "failed"
    assert final["error"]["type"] == "StepConfigurationError"
    assert "input item 0 is int, not a string" in final["error"]["message"]
    assert openai_fake.requests == []


# -- refused at create time ----------------------------------------------------------------


async def create_errors(
    client: httpx.AsyncClient, session: Session, steps: list[dict[str, Any]]
) -> list[dict[str, str]]:
    response = await client.post(
        "/workflows", headers=session.headers, json={"name": "refused", "steps": steps}
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    errors: list[dict[str, str]] = body["details"]["errors"]
    return errors


async def test_anthropic_embeddings_are_refused_at_create_time(
    client: httpx.AsyncClient, admin: Session
) -> None:
    errors = await create_errors(client, admin, [embed("e", "anthropic", "{{text}}", "v")])

    assert errors == [
        {
            "field": "steps[0].provider",
            "message": "provider 'anthropic' does not offer embeddings; "
            "must be one of 'openai' or 'cohere'",
        }
    ]


async def test_an_anthropic_temperature_above_one_is_refused_at_create_time(
    client: httpx.AsyncClient, admin: Session
) -> None:
    steps = [
        llm("a", "anthropic", "hi", "x", temperature=1.5),
        llm("b", "cohere", "hi", "y", temperature=1.5),
    ]

    errors = await create_errors(client, admin, steps)

    assert [e["field"] for e in errors] == ["steps[0].temperature"]
    assert "from 0 to 1" in errors[0]["message"]


async def test_input_type_is_refused_for_a_provider_without_one(
    client: httpx.AsyncClient, admin: Session
) -> None:
    errors = await create_errors(
        client, admin, [embed("e", "openai", "{{text}}", "v", input_type="search_query")]
    )

    assert errors == [
        {
            "field": "steps[0].input_type",
            "message": "input_type applies to provider 'cohere' only, not 'openai'",
        }
    ]


async def test_an_unknown_input_type_is_refused(client: httpx.AsyncClient, admin: Session) -> None:
    errors = await create_errors(
        client, admin, [embed("e", "cohere", "{{text}}", "v", input_type="nonsense")]
    )

    assert [e["field"] for e in errors] == ["steps[0].input_type"]


# -- errors as an execution ends -------------------------------------------------------------


@pytest.mark.usefixtures("keys")
@pytest.mark.parametrize("provider", ["anthropic", "cohere"])
async def test_refused_credentials_fail_after_one_call_naming_the_secret(
    client: httpx.AsyncClient,
    admin: Session,
    server: LocalServer,
    anthropic_fake: FakeAnthropic,
    cohere_fake: FakeCohere,
    provider: str,
) -> None:
    fake = anthropic_fake if provider == "anthropic" else cohere_fake
    path = "/v1/messages" if provider == "anthropic" else "/v2/chat"
    fake.api_key = "a-key-nobody-has"

    final = await run(client, admin, [llm("a", provider, "hi", "x")], {})

    assert final["status"] == "failed"
    variable = "ANTHROPIC_API_KEY" if provider == "anthropic" else "CO_API_KEY"
    assert final["error"] == {
        "type": "ProviderAuthError",
        "message": final["error"]["message"],
        "step_id": "a",
    }
    assert final["error"]["message"].startswith(f"{provider} refused the credentials (HTTP 401")
    assert variable in final["error"]["message"]
    assert len(fake.requests_to(path)) == 1
    assert (await step_run(server, final["id"], "a"))["attempts"] == 1


@pytest.mark.usefixtures("keys")
@pytest.mark.parametrize("provider", ["anthropic", "cohere"])
async def test_a_rate_limit_is_retried_and_the_step_completes(
    client: httpx.AsyncClient,
    admin: Session,
    server: LocalServer,
    anthropic_fake: FakeAnthropic,
    cohere_fake: FakeCohere,
    provider: str,
) -> None:
    fake = anthropic_fake if provider == "anthropic" else cohere_fake
    path = "/v1/messages" if provider == "anthropic" else "/v2/chat"
    fake.fail_next(429)

    final = await run(client, admin, [llm("a", provider, "hi", "x")], {})

    assert final["status"] == "completed", final
    assert [r.status for r in fake.requests_to(path)] == [429, 200]
    assert (await step_run(server, final["id"], "a"))["attempts"] == 2


@pytest.mark.usefixtures("keys")
@pytest.mark.parametrize(("provider", "status"), [("anthropic", 529), ("cohere", 503)])
async def test_server_errors_are_retried_then_end_in_a_readable_error(
    client: httpx.AsyncClient,
    admin: Session,
    anthropic_fake: FakeAnthropic,
    cohere_fake: FakeCohere,
    provider: str,
    status: int,
) -> None:
    fake = anthropic_fake if provider == "anthropic" else cohere_fake
    path = "/v1/messages" if provider == "anthropic" else "/v2/chat"
    fake.fail_next(status, times=3, message="the model is busy right now")

    final = await run(client, admin, [llm("a", provider, "hi", "x")], {})

    assert final["status"] == "failed"
    assert final["error"]["type"] == "ProviderUnavailable"
    assert final["error"]["message"].startswith(f"{provider} is unavailable (HTTP {status}")
    assert final["error"]["message"].endswith("the model is busy right now")
    assert final["steps"]["a"]["error"]["type"] == "ProviderUnavailable"
    assert len(fake.requests_to(path)) == FAST_RETRY["max_attempts"]


@pytest.mark.usefixtures("keys")
@pytest.mark.parametrize(
    ("provider", "variable", "step"),
    [
        ("anthropic", "ANTHROPIC_BASE_URL", llm("a", "anthropic", "hi", "x")),
        ("cohere", "CO_API_URL", embed("a", "cohere", "hi", "x")),
    ],
)
async def test_a_provider_refusing_connections_fails_the_execution_within_a_minute(
    client: httpx.AsyncClient, admin: Session, provider: str, variable: str, step: dict[str, Any]
) -> None:
    # A secret set through the API points the provider at a port nothing listens on.
    await set_secret(client, admin, variable, f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()

    final = await run(client, admin, [step], {}, timeout=60.0)

    assert final["status"] == "failed"
    assert time.monotonic() - started < 60
    assert final["error"]["type"] == "ProviderUnavailable"
    assert f"{provider} could not be reached at 127.0.0.1:" in final["error"]["message"]


# -- secrets -------------------------------------------------------------------------------


@pytest.mark.usefixtures("keys")
async def test_no_secret_value_reaches_state_responses_or_logs(
    client: httpx.AsyncClient,
    admin: Session,
    server: LocalServer,
    anthropic_fake: FakeAnthropic,
    cohere_fake: FakeCohere,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    steps = [
        llm("chat", "anthropic", "hi {{text}}", "reply"),
        embed("vectors", "cohere", "{{text}}", "vector", depends_on=["chat"]),
        llm("judge", "cohere", "judge {{reply}}", "verdict", depends_on=["chat"]),
    ]
    ok = await run(client, admin, steps, {"text": "hello"})
    cohere_fake.fail_next(401, message=f"bad key {COHERE_KEY}")
    refused = await run(client, admin, steps, {"text": "again"})
    anthropic_fake.fail_next(429, times=3, message=f"slow down {ANTHROPIC_KEY}")
    limited = await run(client, admin, steps, {"text": "third"})

    assert ok["status"] == "completed"
    assert refused["status"] == "failed" and limited["status"] == "failed"
    seen: list[str] = [caplog.text]
    for execution in (ok, refused, limited):
        workflow_id = execution["workflow_id"]
        status = await get_status(client, admin, workflow_id, execution["id"])
        seen.append(str(status))
        checkpoints = await client.get(
            f"/state/{workflow_id}/checkpoints",
            headers=admin.headers,
            params={"executionId": execution["id"]},
        )
        seen.append(checkpoints.text)
    seen.append((await client.get("/audit/events", headers=admin.headers)).text)
    seen.append((await client.get("/admin/config", headers=admin.headers)).text)
    async with server.runtime.db.connection() as conn:
        for table in ("executions", "step_runs", "checkpoints", "audit_events"):
            cursor = await conn.execute(f"SELECT * FROM {table}")  # noqa: S608 (fixed names)
            seen.append(str(await cursor.fetchall()))
    everything = "\n".join(seen)
    for marker in (ANTHROPIC_KEY, COHERE_KEY, OPENAI_KEY):
        assert marker not in everything
    assert "CO_API_KEY" in str(refused["error"])
