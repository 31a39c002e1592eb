"""Fallback chains of ``llm`` and ``embed`` steps, through the API and the official SDKs
against the fake providers: tried in order once the primary's retries are spent on
retryable errors, never after a permanent one, every attempt recorded."""

from __future__ import annotations

import httpx

from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.cohere_server import FakeCohere
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import Session
from tests.integration.llm_support import (
    _fresh_fakes,
    anthropic_fake,
    cohere_fake,
    embed,
    llm,
    openai_fake,
    refused,
    run,
    server,
)

__all__ = ["_fresh_fakes", "anthropic_fake", "cohere_fake", "openai_fake", "server"]

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"


def outcomes(final: dict[str, object], step_id: str) -> list[tuple[str, str, str]]:
    steps = final["steps"]
    assert isinstance(steps, dict)
    return [(a["provider"], a["model"], a["outcome"]) for a in steps[step_id]["usage"]["attempts"]]


async def test_an_outage_spends_the_retries_then_the_fallback_answers(
    client: httpx.AsyncClient,
    admin: Session,
    openai_fake: FakeOpenAI,
    anthropic_fake: FakeAnthropic,
) -> None:
    openai_fake.fail_next(503, times=2)
    step = llm(
        "answer",
        "openai",
        "gpt-4o",
        fallback=[{"provider": "anthropic", "model": "claude-sonnet-4-20250514"}],
    )

    final = await run(client, admin, [step])

    assert final["status"] == "completed", final
    assert final["context"]["outputs"]["answer"] == "echo: Answer why is the sky blue"
    assert outcomes(final, "answer") == [
        ("openai", "gpt-4o", "ProviderUnavailable"),
        ("openai", "gpt-4o", "ProviderUnavailable"),
        ("anthropic", "claude-sonnet-4-20250514", "succeeded"),
    ]
    attempts = final["steps"]["answer"]["usage"]["attempts"]
    assert attempts[2]["input_tokens"] > 0 and attempts[2]["cost_usd"] > 0
    assert all(a["latency_ms"] >= 0 for a in attempts)
    assert len(openai_fake.requests_to(CHAT)) == 2
    assert len(anthropic_fake.requests_to(MESSAGES)) == 1


async def test_a_refused_credential_does_not_fall_back(
    client: httpx.AsyncClient,
    admin: Session,
    openai_fake: FakeOpenAI,
    anthropic_fake: FakeAnthropic,
) -> None:
    # The last attempt (the one a fallback would follow) ends with the refusal.
    openai_fake.fail_next(503)
    openai_fake.fail_next(401)
    step = llm("answer", "openai", "gpt-4o", fallback=[{"provider": "anthropic", "model": "c"}])

    final = await run(client, admin, [step])

    assert final["status"] == "failed"
    assert final["error"]["type"] == "ProviderAuthError"
    assert outcomes(final, "answer") == [
        ("openai", "gpt-4o", "ProviderUnavailable"),
        ("openai", "gpt-4o", "ProviderAuthError"),
    ]
    assert anthropic_fake.requests_to(MESSAGES) == []


async def test_a_rejected_request_does_not_fall_back(
    client: httpx.AsyncClient,
    admin: Session,
    openai_fake: FakeOpenAI,
    anthropic_fake: FakeAnthropic,
) -> None:
    openai_fake.fail_next(400, message="this prompt is refused")
    step = llm(
        "answer",
        "openai",
        "gpt-4o",
        retry={"max_attempts": 1},
        fallback=[{"provider": "anthropic", "model": "c"}],
    )

    final = await run(client, admin, [step])

    assert final["error"]["type"] == "ProviderBadRequest"
    assert "this prompt is refused" in final["error"]["message"]
    assert anthropic_fake.requests_to(MESSAGES) == []


async def test_fallbacks_are_tried_in_order_with_their_own_settings(
    client: httpx.AsyncClient,
    admin: Session,
    openai_fake: FakeOpenAI,
    anthropic_fake: FakeAnthropic,
    cohere_fake: FakeCohere,
) -> None:
    openai_fake.fail_next(429, times=2)
    anthropic_fake.fail_next(529)
    step = llm(
        "answer",
        "openai",
        "gpt-4o",
        temperature=0.4,
        max_tokens=300,
        fallback=[
            {"provider": "anthropic", "model": "claude-3-5-haiku-latest", "max_tokens": 40},
            {"provider": "cohere", "model": "command-r", "temperature": 0.9},
        ],
    )

    final = await run(client, admin, [step])

    assert final["status"] == "completed", final
    assert outcomes(final, "answer") == [
        ("openai", "gpt-4o", "ProviderRateLimited"),
        ("openai", "gpt-4o", "ProviderRateLimited"),
        ("anthropic", "claude-3-5-haiku-latest", "ProviderUnavailable"),
        ("cohere", "command-r", "succeeded"),
    ]
    [to_anthropic] = anthropic_fake.requests_to(MESSAGES)
    assert (to_anthropic.body["max_tokens"], to_anthropic.body["temperature"]) == (40, 0.4)
    [to_cohere] = cohere_fake.requests_to("/v2/chat")
    assert (to_cohere.body["max_tokens"], to_cohere.body["temperature"]) == (300, 0.9)


async def test_a_chain_that_fails_everywhere_says_why_for_each_provider(
    client: httpx.AsyncClient,
    admin: Session,
    openai_fake: FakeOpenAI,
    anthropic_fake: FakeAnthropic,
) -> None:
    openai_fake.fail_next(503, times=2, message="openai is down")
    anthropic_fake.fail_next(529, message="anthropic is overloaded")
    step = llm("answer", "openai", "gpt-4o", fallback=[{"provider": "anthropic", "model": "c"}])

    final = await run(client, admin, [step])

    assert final["status"] == "failed"
    assert final["error"]["type"] == "ProviderUnavailable"
    assert "openai is down" in final["error"]["message"]
    assert "anthropic is overloaded" in final["error"]["message"]
    assert len(final["steps"]["answer"]["usage"]["attempts"]) == 3


async def test_an_embedding_fallback_of_the_same_size_answers(
    client: httpx.AsyncClient,
    admin: Session,
    openai_fake: FakeOpenAI,
    cohere_fake: FakeCohere,
) -> None:
    # The primary's size is learnt from a call it answered (the model is not in the table).
    first = await run(client, admin, [embed("vec", "openai", "house-embedder")])
    assert first["status"] == "completed", first
    openai_fake.fail_next(503, times=2)
    step = embed(
        "vec", "openai", "house-embedder", fallback=[{"provider": "cohere", "model": "co-embed"}]
    )

    final = await run(client, admin, [step])

    assert final["status"] == "completed", final
    assert outcomes(final, "vec")[-1] == ("cohere", "co-embed", "succeeded")
    assert len(final["context"]["outputs"]["vector"]) == openai_fake.embedding_dim
    [call] = cohere_fake.requests_to("/v2/embed")
    assert call.body["input_type"] == "search_query"


async def test_an_embedding_fallback_of_another_size_is_refused_at_run_time(
    client: httpx.AsyncClient,
    admin: Session,
    openai_fake: FakeOpenAI,
    cohere_fake: FakeCohere,
) -> None:
    assert (await run(client, admin, [embed("vec", "openai", "house-embedder")]))["status"] == (
        "completed"
    )
    cohere_fake.embedding_dim = openai_fake.embedding_dim // 2
    openai_fake.fail_next(503, times=2)
    step = embed(
        "vec", "openai", "house-embedder", fallback=[{"provider": "cohere", "model": "co-embed"}]
    )

    final = await run(client, admin, [step])

    assert final["status"] == "failed"
    message = final["error"]["message"]
    assert f"{cohere_fake.embedding_dim}-dimension" in message
    assert f"produces {openai_fake.embedding_dim}" in message
    assert outcomes(final, "vec")[-1] == ("cohere", "co-embed", "succeeded")


async def test_an_embedding_fallback_is_refused_when_the_primary_size_is_unknown(
    client: httpx.AsyncClient, admin: Session, openai_fake: FakeOpenAI
) -> None:
    openai_fake.fail_next(503, times=2)
    step = embed(
        "vec", "openai", "never-answered", fallback=[{"provider": "cohere", "model": "co-embed"}]
    )

    final = await run(client, admin, [step])

    assert final["status"] == "failed"
    assert "is unknown" in final["error"]["message"]


async def test_fallbacks_a_provider_would_refuse_are_refused_at_create_time(
    client: httpx.AsyncClient, admin: Session
) -> None:
    errors = await refused(
        client,
        admin,
        [
            llm(
                "hot",
                "openai",
                "gpt-4o",
                temperature=1.5,
                fallback=[
                    {"provider": "anthropic", "model": "claude-3-5-haiku-latest"},
                    {"provider": "openai", "model": "gpt-4o"},
                ],
            ),
            embed(
                "vec",
                "openai",
                "text-embedding-3-small",
                fallback=[{"provider": "cohere", "model": "embed-english-v3.0"}],
            ),
        ],
    )

    assert "(the step's own)" in errors["steps[0].fallback[0].temperature"]
    assert "already earlier in the chain" in errors["steps[0].fallback[1].model"]
    assert "1024 dimensions" in errors["steps[1].fallback[0].model"]
    assert "1536" in errors["steps[1].fallback[0].model"]


async def test_malformed_fallbacks_are_refused_field_by_field(
    client: httpx.AsyncClient, admin: Session
) -> None:
    errors = await refused(
        client,
        admin,
        [
            embed("vec", "openai", "e", fallback=[{"provider": "anthropic", "model": "claude"}]),
            llm("many", "openai", "gpt-4o", fallback=[{"provider": "openai", "model": "m"}] * 6),
            llm("typo", "openai", "gpt-4o", fallback=[{"provider": "openai", "modle": "m"}]),
        ],
    )

    assert "does not offer embeddings" in errors["steps[0].fallback[0].provider"]
    assert "steps[1].fallback" in errors
    assert errors["steps[2].fallback[0].modle"] == "unknown field"
