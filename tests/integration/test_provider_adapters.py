"""AnthropicProvider and CohereProvider: the official SDKs over real HTTP against the fakes.

Every error mapping is checked per provider, with the SDK's own retries off (one request
per call), and no credential in any message or traceback.
"""

from __future__ import annotations

import subprocess
import sys
import traceback
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from llm_orchestrator.providers import (
    ChatRequest,
    EmbedRequest,
    EnvCredentialResolver,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderError,
    ProviderInvalidResponse,
    ProviderRateLimited,
    ProviderRegistry,
    ProviderUnavailable,
    UnsupportedProvider,
)
from llm_orchestrator.providers.anthropic_provider import DEFAULT_MAX_TOKENS
from tests.fakes.anthropic_server import READY_PREFIX as ANTHROPIC_READY
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.base import FakeProviderServer
from tests.fakes.cohere_server import READY_PREFIX as COHERE_READY
from tests.fakes.cohere_server import FakeCohere
from tests.fakes.embeddings import count_tokens, fake_embedding
from tests.fakes.openai_server import FakeOpenAI
from tests.support import free_port

ANTHROPIC_KEY = "sk-ant-marker-4f1c9e2a7b"
COHERE_KEY = "co-marker-8d3b6a0e5c"
OPENAI_KEY = "sk-marker-openai-1234"
REPO_ROOT = Path(__file__).resolve().parents[2]
PROVIDERS = ("anthropic", "cohere")
ENDPOINT = {"anthropic": "/v1/messages", "cohere": "/v2/chat"}
KEY_VARIABLE = {"anthropic": "ANTHROPIC_API_KEY", "cohere": "CO_API_KEY"}


@pytest.fixture(scope="module")
def anthropic_fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic.start(api_key=ANTHROPIC_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def cohere_fake() -> Iterator[FakeCohere]:
    with FakeCohere.start(api_key=COHERE_KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_fakes(anthropic_fake: FakeAnthropic, cohere_fake: FakeCohere) -> None:
    anthropic_fake.reset()
    cohere_fake.reset()


def environ_for(anthropic_url: str, cohere_url: str, **overrides: str) -> dict[str, str]:
    return {
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "ANTHROPIC_BASE_URL": anthropic_url,
        "CO_API_KEY": COHERE_KEY,
        "CO_API_URL": cohere_url,
        **overrides,
    }


@pytest.fixture
async def registry(
    anthropic_fake: FakeAnthropic, cohere_fake: FakeCohere
) -> AsyncIterator[ProviderRegistry]:
    environ = environ_for(anthropic_fake.base_url, cohere_fake.base_url)
    providers = ProviderRegistry(EnvCredentialResolver(environ), timeout_seconds=5.0)
    yield providers
    await providers.aclose()


def fake_of(
    name: str, anthropic_fake: FakeAnthropic, cohere_fake: FakeCohere
) -> FakeProviderServer:
    return anthropic_fake if name == "anthropic" else cohere_fake


# -- Anthropic ---------------------------------------------------------------------------


async def test_anthropic_completion_returns_text_usage_and_latency(
    anthropic_fake: FakeAnthropic, registry: ProviderRegistry
) -> None:
    anthropic_fake.latency = 0.05

    result = await registry.llm("anthropic").complete(
        ChatRequest(
            model="claude-test-model", prompt="how are you", system="be brief", max_tokens=50
        )
    )

    assert result.text == "echo: how are you"
    assert result.input_tokens == count_tokens("be brief how are you")
    assert result.output_tokens == count_tokens(result.text)
    assert result.model == "claude-test-model"
    assert 50 <= result.latency_ms < 5000
    [call] = anthropic_fake.requests_to("/v1/messages")
    assert call.body["system"] == "be brief"
    assert call.body["messages"] == [{"role": "user", "content": "how are you"}]
    assert call.body["max_tokens"] == 50


async def test_anthropic_gets_the_default_max_tokens_when_a_step_sets_none(
    anthropic_fake: FakeAnthropic, registry: ProviderRegistry
) -> None:
    await registry.llm("anthropic").complete(ChatRequest(model="claude", prompt="hi"))

    [call] = anthropic_fake.requests_to("/v1/messages")
    assert call.body["max_tokens"] == DEFAULT_MAX_TOKENS == 4096
    assert not {"system", "temperature"} & call.body.keys()


async def test_anthropic_temperature_is_sent(
    anthropic_fake: FakeAnthropic, registry: ProviderRegistry
) -> None:
    await registry.llm("anthropic").complete(
        ChatRequest(model="claude", prompt="hi", temperature=0.25)
    )

    [call] = anthropic_fake.requests_to("/v1/messages")
    assert call.body["temperature"] == 0.25


async def test_anthropic_stopped_by_max_tokens_keeps_the_partial_text(
    anthropic_fake: FakeAnthropic, registry: ProviderRegistry
) -> None:
    result = await registry.llm("anthropic").complete(
        ChatRequest(model="claude", prompt="one two three four", max_tokens=2)
    )

    assert result.text == "echo: one"
    assert result.output_tokens == 2


async def test_anthropic_offers_no_embeddings(registry: ProviderRegistry) -> None:
    with pytest.raises(UnsupportedProvider, match="does not offer embeddings"):
        registry.embedding("anthropic")


# -- Cohere ------------------------------------------------------------------------------


async def test_cohere_chat_sends_system_and_user_messages(
    cohere_fake: FakeCohere, registry: ProviderRegistry
) -> None:
    result = await registry.llm("cohere").complete(
        ChatRequest(model="command-r-plus", prompt="hello there", system="be kind", temperature=1.5)
    )

    assert result.text == "echo: hello there"
    assert (result.input_tokens, result.output_tokens) == (4, 3)
    assert result.model == "command-r-plus"
    [call] = cohere_fake.requests_to("/v2/chat")
    assert call.body["messages"] == [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": "hello there"},
    ]
    assert call.body["temperature"] == 1.5
    assert "max_tokens" not in call.body


async def test_cohere_embeds_a_list_as_documents_in_order(
    cohere_fake: FakeCohere, registry: ProviderRegistry
) -> None:
    texts = ["Paris is the capital of France", "Berlin is in Germany", "cats purr"]

    result = await registry.embedding("cohere").embed(EmbedRequest(model="embed-v4.0", input=texts))

    assert result.vectors == [fake_embedding(t) for t in texts]
    assert result.input_tokens == sum(count_tokens(t) for t in texts)
    [call] = cohere_fake.requests_to("/v2/embed")
    assert call.body["input_type"] == "search_document"
    assert call.body["embedding_types"] == ["float"]


async def test_cohere_embeds_a_single_string_as_a_query(
    cohere_fake: FakeCohere, registry: ProviderRegistry
) -> None:
    result = await registry.embedding("cohere").embed(
        EmbedRequest(model="embed-v4.0", input="capital of France?")
    )

    assert result.vectors == [fake_embedding("capital of France?")]
    [call] = cohere_fake.requests_to("/v2/embed")
    assert call.body["input_type"] == "search_query"
    assert call.body["texts"] == ["capital of France?"]


async def test_cohere_input_type_can_be_chosen(
    cohere_fake: FakeCohere, registry: ProviderRegistry
) -> None:
    await registry.embedding("cohere").embed(
        EmbedRequest(model="embed-v4.0", input="a", input_type="clustering")
    )

    [call] = cohere_fake.requests_to("/v2/embed")
    assert call.body["input_type"] == "clustering"


async def test_cohere_embeds_more_than_96_texts_in_batches_keeping_order(
    cohere_fake: FakeCohere, registry: ProviderRegistry
) -> None:
    texts = [f"document number {i}" for i in range(200)]

    result = await registry.embedding("cohere").embed(EmbedRequest(model="embed-v4.0", input=texts))

    assert result.vectors == [fake_embedding(t) for t in texts]
    assert [len(c.body["texts"]) for c in cohere_fake.requests_to("/v2/embed")] == [96, 96, 8]


async def test_openai_and_cohere_fakes_embed_alike_and_rank_by_shared_words(
    cohere_fake: FakeCohere, registry: ProviderRegistry
) -> None:
    with FakeOpenAI.start(api_key=OPENAI_KEY) as openai_fake:
        environ = {"OPENAI_API_KEY": OPENAI_KEY, "OPENAI_BASE_URL": openai_fake.base_url}
        openai = ProviderRegistry(EnvCredentialResolver(environ), timeout_seconds=5.0)
        try:
            docs = ["Paris is the capital of France", "Bananas are yellow fruit"]
            by_openai = await openai.embedding("openai").embed(EmbedRequest(model="m", input=docs))
        finally:
            await openai.aclose()
    query = await registry.embedding("cohere").embed(
        EmbedRequest(model="m", input="What is the capital of France?")
    )

    by_cohere = await registry.embedding("cohere").embed(EmbedRequest(model="m", input=docs))
    assert by_openai.vectors == by_cohere.vectors
    scores = [
        sum(a * b for a, b in zip(query.vectors[0], d, strict=True)) for d in by_cohere.vectors
    ]
    assert scores[0] > 0.5 > scores[1]


# -- clients -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", PROVIDERS)
async def test_one_client_per_credential_set_is_reused(
    name: str,
    anthropic_fake: FakeAnthropic,
    cohere_fake: FakeCohere,
    registry: ProviderRegistry,
) -> None:
    fake = fake_of(name, anthropic_fake, cohere_fake)
    for _ in range(3):
        await registry.llm(name).complete(ChatRequest(model="m", prompt="hi"))

    # One kept-alive connection: the same client (and pool) served every call.
    assert len({call.client for call in fake.requests_to(ENDPOINT[name])}) == 1


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_rotated_key_applies_to_the_next_call(
    name: str, anthropic_fake: FakeAnthropic, cohere_fake: FakeCohere
) -> None:
    fake = fake_of(name, anthropic_fake, cohere_fake)
    environ = environ_for(anthropic_fake.base_url, cohere_fake.base_url)
    environ[KEY_VARIABLE[name]] = "wrong-key-000000"
    providers = ProviderRegistry(EnvCredentialResolver(environ), timeout_seconds=5.0)
    try:
        with pytest.raises(ProviderAuthError):
            await providers.llm(name).complete(ChatRequest(model="m", prompt="hi"))
        environ[KEY_VARIABLE[name]] = fake.api_key or ""
        result = await providers.llm(name).complete(ChatRequest(model="m", prompt="hi"))
    finally:
        await providers.aclose()

    assert result.text == "echo: hi"


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_missing_key_names_the_variable_without_calling(
    name: str, anthropic_fake: FakeAnthropic, cohere_fake: FakeCohere
) -> None:
    fake = fake_of(name, anthropic_fake, cohere_fake)
    environ = environ_for(anthropic_fake.base_url, cohere_fake.base_url)
    del environ[KEY_VARIABLE[name]]
    providers = ProviderRegistry(EnvCredentialResolver(environ), timeout_seconds=5.0)
    try:
        with pytest.raises(ProviderAuthError) as caught:
            await providers.llm(name).complete(ChatRequest(model="m", prompt="hi"))
    finally:
        await providers.aclose()

    assert KEY_VARIABLE[name] in caught.value.message
    assert fake.requests == []


# -- errors ------------------------------------------------------------------------------


async def call(registry: ProviderRegistry, name: str) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await registry.llm(name).complete(ChatRequest(model="m", prompt="hi"))
    return caught.value


def assert_no_secret(error: ProviderError) -> None:
    rendered = "".join(traceback.format_exception(error)) + repr(error.__dict__)
    for secret in (ANTHROPIC_KEY, COHERE_KEY):
        assert secret not in rendered


@pytest.mark.parametrize("name", PROVIDERS)
@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_are_permanent_and_name_the_variable(
    name: str,
    status: int,
    anthropic_fake: FakeAnthropic,
    cohere_fake: FakeCohere,
    registry: ProviderRegistry,
) -> None:
    fake = fake_of(name, anthropic_fake, cohere_fake)
    fake.fail_next(status, message=f"key {ANTHROPIC_KEY} {COHERE_KEY} is not valid")

    error = await call(registry, name)

    assert isinstance(error, ProviderAuthError)
    assert not error.retryable
    assert error.status_code == status
    assert name in error.message and KEY_VARIABLE[name] in error.message
    assert_no_secret(error)
    assert len(fake.requests_to(ENDPOINT[name])) == 1


async def test_a_real_wrong_key_is_refused_by_the_fakes_too(
    anthropic_fake: FakeAnthropic, cohere_fake: FakeCohere
) -> None:
    environ = environ_for(
        anthropic_fake.base_url,
        cohere_fake.base_url,
        ANTHROPIC_API_KEY="sk-ant-wrong-0000",
        CO_API_KEY="co-wrong-0000",
    )
    providers = ProviderRegistry(EnvCredentialResolver(environ), timeout_seconds=5.0)
    try:
        for name in PROVIDERS:
            error = await call(providers, name)
            assert isinstance(error, ProviderAuthError), error
            assert "wrong-0000" not in error.message
    finally:
        await providers.aclose()


@pytest.mark.parametrize("name", PROVIDERS)
@pytest.mark.parametrize("status", [400, 404, 422])
async def test_rejected_requests_are_permanent_with_the_providers_message(
    name: str,
    status: int,
    anthropic_fake: FakeAnthropic,
    cohere_fake: FakeCohere,
    registry: ProviderRegistry,
) -> None:
    fake = fake_of(name, anthropic_fake, cohere_fake)
    fake.fail_next(status, message="model 'm' is not a thing")

    error = await call(registry, name)

    assert isinstance(error, ProviderBadRequest)
    assert not error.retryable
    assert f"HTTP {status}" in error.message
    assert "model 'm' is not a thing" in error.message


@pytest.mark.parametrize("name", PROVIDERS)
async def test_rate_limits_are_retryable_with_the_retry_after(
    name: str,
    anthropic_fake: FakeAnthropic,
    cohere_fake: FakeCohere,
    registry: ProviderRegistry,
) -> None:
    fake = fake_of(name, anthropic_fake, cohere_fake)
    fake.fail_next(429, retry_after=5)

    error = await call(registry, name)

    assert isinstance(error, ProviderRateLimited)
    assert error.retryable
    assert error.retry_after == 5.0
    # The SDK's own retries are off: one 429 costs one call.
    assert len(fake.requests_to(ENDPOINT[name])) == 1


@pytest.mark.parametrize("name", PROVIDERS)
@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retryable_and_readable(
    name: str,
    status: int,
    anthropic_fake: FakeAnthropic,
    cohere_fake: FakeCohere,
    registry: ProviderRegistry,
) -> None:
    fake = fake_of(name, anthropic_fake, cohere_fake)
    fake.fail_next(status, message="the backend fell over")

    error = await call(registry, name)

    assert isinstance(error, ProviderUnavailable)
    assert (
        error.message
        == f"{name} is unavailable (HTTP {status}" + error.message.split(f"HTTP {status}", 1)[1]
    )
    assert "the backend fell over" in error.message
    assert len(fake.requests_to(ENDPOINT[name])) == 1


async def test_anthropic_overloaded_529_is_retryable(
    anthropic_fake: FakeAnthropic, registry: ProviderRegistry
) -> None:
    anthropic_fake.fail_next(529)

    error = await call(registry, "anthropic")

    assert isinstance(error, ProviderUnavailable)
    assert "HTTP 529, overloaded_error" in error.message


async def test_cohere_invalid_token_498_is_refused_credentials(
    cohere_fake: FakeCohere, registry: ProviderRegistry
) -> None:
    cohere_fake.fail_next(498)

    error = await call(registry, "cohere")

    assert isinstance(error, ProviderAuthError)
    assert "CO_API_KEY" in error.message


async def test_cohere_embed_errors_are_translated_too(
    cohere_fake: FakeCohere, registry: ProviderRegistry
) -> None:
    cohere_fake.fail_next(429, retry_after=2)

    with pytest.raises(ProviderRateLimited) as caught:
        await registry.embedding("cohere").embed(EmbedRequest(model="m", input=["a", "b"]))

    assert caught.value.retry_after == 2.0


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_slow_provider_times_out_as_unavailable(
    name: str, anthropic_fake: FakeAnthropic, cohere_fake: FakeCohere
) -> None:
    fake = fake_of(name, anthropic_fake, cohere_fake)
    fake.latency = 3.0
    environ = environ_for(anthropic_fake.base_url, cohere_fake.base_url)
    providers = ProviderRegistry(EnvCredentialResolver(environ), timeout_seconds=0.3)
    try:
        error = await call(providers, name)
    finally:
        await providers.aclose()

    assert isinstance(error, ProviderUnavailable)
    assert "did not answer within 0.3s" in error.message


@pytest.mark.parametrize("name", PROVIDERS)
async def test_a_refused_connection_is_unavailable_and_says_so(name: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    providers = ProviderRegistry(
        EnvCredentialResolver(environ_for(closed, closed)), timeout_seconds=5.0
    )
    try:
        error = await call(providers, name)
    finally:
        await providers.aclose()

    assert isinstance(error, ProviderUnavailable)
    assert error.retryable
    assert f"{name} could not be reached at 127.0.0.1:" in error.message
    assert_no_secret(error)


@pytest.mark.parametrize("name", PROVIDERS)
@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("<html><body>Bad gateway</body></html>", "text/html"),
        ('{"id": "msg_1", "content": [', "application/json"),
        ("[1, 2, 3]", "application/json"),
        ("{}", "application/json"),
        ('{"content": "not a list", "message": 7, "usage": "none"}', "application/json"),
    ],
)
async def test_a_malformed_success_reply_is_an_invalid_response_not_a_crash(
    name: str,
    body: str,
    content_type: str,
    anthropic_fake: FakeAnthropic,
    cohere_fake: FakeCohere,
    registry: ProviderRegistry,
) -> None:
    fake = fake_of(name, anthropic_fake, cohere_fake)
    fake.reply_next(body, content_type=content_type)

    error = await call(registry, name)

    assert isinstance(error, ProviderInvalidResponse), error
    assert not error.retryable
    assert error.message.startswith(f"{name} returned")


@pytest.mark.parametrize(
    "body",
    [
        "[1, 2]",
        "{}",
        '{"id": "e", "embeddings": {"float": [[0.1]]}}',
        '{"id": "e", "embeddings": {"float": [["a", "b"], [1]]}}',
        '{"id": "e", "embeddings": {"float": "nope"}}',
    ],
)
async def test_a_malformed_embedding_reply_is_an_invalid_response(
    body: str, cohere_fake: FakeCohere, registry: ProviderRegistry
) -> None:
    cohere_fake.reply_next(body)

    with pytest.raises(ProviderInvalidResponse) as caught:
        await registry.embedding("cohere").embed(EmbedRequest(model="m", input=["a", "b"]))

    assert caught.value.message.startswith("cohere returned")


# -- processes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "ready"),
    [
        ("tests.fakes.anthropic_server", ANTHROPIC_READY),
        ("tests.fakes.cohere_server", COHERE_READY),
    ],
)
def test_fakes_run_as_their_own_process(module: str, ready: str) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", module, "--port", str(port)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.strip() == f"{ready} http://127.0.0.1:{port}"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
