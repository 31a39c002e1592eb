"""OpenAIProvider: the official SDK over real HTTP against the fake OpenAI server."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from llm_orchestrator.providers import (
    ChatRequest,
    ChatResult,
    CredentialResolver,
    EmbedRequest,
    EnvCredentialResolver,
    FallbackCredentialResolver,
    OpenAIProvider,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderCredentials,
    ProviderInvalidResponse,
    ProviderQuotaExceeded,
    ProviderRateLimited,
    ProviderRegistry,
    ProviderUnavailable,
    UnsupportedProvider,
)
from tests.fakes.openai_server import READY_PREFIX, FakeOpenAI, count_tokens, fake_embedding
from tests.support import free_port

API_KEY = "sk-test-integration-0123456789abcdef"
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.start(api_key=API_KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_fake(fake: FakeOpenAI) -> None:
    fake.reset()


def env_for(base_url: str, api_key: str | None = API_KEY) -> EnvCredentialResolver:
    environ = {"OPENAI_BASE_URL": base_url}
    if api_key is not None:
        environ["OPENAI_API_KEY"] = api_key
    return EnvCredentialResolver(environ)


@pytest.fixture
async def registry(fake: FakeOpenAI) -> AsyncIterator[ProviderRegistry]:
    providers = ProviderRegistry(env_for(fake.base_url), timeout_seconds=5.0)
    yield providers
    await providers.aclose()


# -- success paths ---------------------------------------------------------------------


async def test_completion_returns_text_usage_and_latency(
    fake: FakeOpenAI, registry: ProviderRegistry
) -> None:
    fake.latency = 0.05
    request = ChatRequest(
        model="gpt-4o-mini",
        prompt="how are you today",
        system="be brief",
        temperature=0.3,
        max_tokens=50,
    )

    result = await registry.llm("openai").complete(request)

    assert result.text == "echo: how are you today"
    assert result.input_tokens == count_tokens("be brief how are you today")
    assert result.output_tokens == count_tokens(result.text)
    assert result.model == "gpt-4o-mini"
    assert 50 <= result.latency_ms < 2000
    [call] = fake.requests_to("/v1/chat/completions")
    assert call.has_auth
    assert call.body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "how are you today"},
    ]
    assert call.body["temperature"] == 0.3
    # Not api.openai.com: compatible servers get the widely supported parameter.
    assert call.body["max_tokens"] == 50
    assert "max_completion_tokens" not in call.body


async def test_unset_options_are_not_sent(fake: FakeOpenAI, registry: ProviderRegistry) -> None:
    await registry.llm("openai").complete(ChatRequest(model="gpt-4", prompt="hi"))

    [call] = fake.requests_to("/v1/chat/completions")
    assert call.body["messages"] == [{"role": "user", "content": "hi"}]
    assert not {"temperature", "max_tokens", "max_completion_tokens"} & call.body.keys()


async def test_a_prompt_beyond_ascii_arrives_as_json_text(
    fake: FakeOpenAI, registry: ProviderRegistry
) -> None:
    await registry.llm("openai").complete(ChatRequest(model="gpt-4", prompt="grüße ✓ 日本"))

    [call] = fake.requests_to("/v1/chat/completions")
    assert call.headers["content-type"] == "application/json"
    assert call.body["messages"] == [{"role": "user", "content": "grüße ✓ 日本"}]


@pytest.mark.parametrize("suffix", ["", "/"], ids=["bare", "trailing-slash"])
async def test_the_endpoint_is_joined_to_the_base_url_as_the_sdk_joins_it(
    fake: FakeOpenAI, suffix: str
) -> None:
    provider = OpenAIProvider(env_for(fake.base_url + suffix))

    await provider.complete(ChatRequest(model="gpt-4", prompt="hi"))
    await provider.embed(EmbedRequest(model="text-embedding-3-small", input="hi"))

    assert [call.path for call in fake.requests] == ["/v1/chat/completions", "/v1/embeddings"]
    await provider.aclose()


async def test_responder_chooses_the_reply(fake: FakeOpenAI, registry: ProviderRegistry) -> None:
    fake.responder = lambda body: "positive" if "amazing" in str(body["messages"]) else "neutral"

    result = await registry.llm("openai").complete(
        ChatRequest(model="gpt-4", prompt="This product is amazing!")
    )

    assert result.text == "positive"


async def test_embeddings_keep_input_order(fake: FakeOpenAI, registry: ProviderRegistry) -> None:
    texts = ["first text", "second", "the third one"]

    result = await registry.embedding("openai").embed(
        EmbedRequest(model="text-embedding-3-small", input=texts)
    )

    assert result.vectors == [fake_embedding(t) for t in texts]
    assert result.input_tokens == sum(count_tokens(t) for t in texts)
    assert result.model == "text-embedding-3-small"
    assert result.latency_ms > 0
    [call] = fake.requests_to("/v1/embeddings")
    assert call.body["encoding_format"] == "float"


async def test_embedding_of_a_single_string(registry: ProviderRegistry) -> None:
    result = await registry.embedding("openai").embed(
        EmbedRequest(model="text-embedding-3-small", input="just one")
    )

    assert result.vectors == [fake_embedding("just one")]


# -- error translation -----------------------------------------------------------------


async def test_429_is_rate_limited_with_retry_after_and_not_retried_by_the_sdk(
    fake: FakeOpenAI, registry: ProviderRegistry
) -> None:
    fake.fail_next(status=429, retry_after=1)

    with pytest.raises(ProviderRateLimited) as caught:
        await registry.llm("openai").complete(ChatRequest(model="gpt-4", prompt="hi"))

    error = caught.value
    assert (error.status_code, error.retry_after, error.retryable) == (429, 1.0, True)
    assert error.provider == "openai"
    assert "Rate limit reached" in error.message
    assert len(fake.requests) == 1


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_as_an_http_date_becomes_seconds(
    fake: FakeOpenAI, registry: ProviderRegistry, status: int
) -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    fake.fail_next(status=status, retry_after=format_datetime(when, usegmt=True))

    with pytest.raises((ProviderRateLimited, ProviderUnavailable)) as caught:
        await registry.llm("openai").complete(ChatRequest(model="gpt-4", prompt="hi"))

    # An HTTP date has whole seconds, and some time passes before the reply is read.
    assert caught.value.retry_after is not None
    assert 100 <= caught.value.retry_after <= 120


async def test_retry_after_in_the_past_or_unreadable(
    fake: FakeOpenAI, registry: ProviderRegistry
) -> None:
    past = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    for header, expected in ((past, 0.0), ("soon, maybe", None), ("2.5", 2.5)):
        fake.fail_next(status=429, retry_after=header)
        with pytest.raises(ProviderRateLimited) as caught:
            await registry.llm("openai").complete(ChatRequest(model="gpt-4", prompt="hi"))
        assert caught.value.retry_after == expected, header


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("<html><body>502 from some proxy</body></html>", "text/html"),
        ('{"id": "chatcmpl-1", "object": "chat.completion", "choices": [', "application/json"),
        (
            '{"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4", "choices": []}',
            "application/json",
        ),
        ('{"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4"}', "application/json"),
        ("[1, 2, 3]", "application/json"),
        ('{"model": "gpt-4", "choices": [{"index": 0, "message": "hi"}]}', "application/json"),
        (
            '{"model": "gpt-4", "choices": [{"message": {"role": "assistant", "content": [1]}}]}',
            "application/json",
        ),
    ],
    ids=[
        "html",
        "truncated-json",
        "no-choices",
        "choices-missing",
        "not-an-object",
        "message-not-an-object",
        "content-not-text",
    ],
)
async def test_a_malformed_completion_is_an_invalid_response_not_a_crash(
    fake: FakeOpenAI, registry: ProviderRegistry, body: str, content_type: str
) -> None:
    fake.reply_next(body, content_type=content_type)

    with pytest.raises(ProviderInvalidResponse) as caught:
        await registry.llm("openai").complete(ChatRequest(model="gpt-4", prompt="hi"))

    assert caught.value.provider == "openai" and not caught.value.retryable
    assert API_KEY not in caught.value.message


@pytest.mark.parametrize(
    "body",
    [
        '{"object": "list", "model": "m", "data": [{"object": "embedding", "index": 0,'
        ' "embedding": [0.1]}]}',
        '{"object": "list", "model": "m", "data": []}',
        "not json at all",
        '{"object": "list", "model": "m", "data": [{"index": 0, "embedding": [0.1, "x"]},'
        ' {"index": 1, "embedding": [0.2, 0.3]}]}',
        '{"object": "list", "model": "m", "data": [{"index": 0, "embedding": "AAAA"},'
        ' {"index": 1, "embedding": [0.2, 0.3]}]}',
    ],
    ids=["one-for-two", "none", "not-json", "not-numbers", "base64-not-asked-for"],
)
async def test_a_malformed_embedding_reply_is_an_invalid_response(
    fake: FakeOpenAI, registry: ProviderRegistry, body: str
) -> None:
    fake.reply_next(body)

    with pytest.raises(ProviderInvalidResponse):
        await registry.embedding("openai").embed(
            EmbedRequest(model="text-embedding-3-small", input=["one", "two"])
        )


async def test_429_for_exhausted_quota_is_not_retryable(
    fake: FakeOpenAI, registry: ProviderRegistry
) -> None:
    fake.fail_next(status=429, code="insufficient_quota", message="You exceeded your quota.")

    with pytest.raises(ProviderQuotaExceeded) as caught:
        await registry.llm("openai").complete(ChatRequest(model="gpt-4", prompt="hi"))

    assert not caught.value.retryable
    assert "You exceeded your quota." in caught.value.message


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_unavailable(
    fake: FakeOpenAI, registry: ProviderRegistry, status: int
) -> None:
    fake.fail_next(status=status, retry_after=2)

    with pytest.raises(ProviderUnavailable) as caught:
        await registry.llm("openai").complete(ChatRequest(model="gpt-4", prompt="hi"))

    assert (caught.value.status_code, caught.value.retry_after) == (status, 2.0)
    assert caught.value.retryable
    assert len(fake.requests) == 1


async def test_embedding_errors_are_translated_too(
    fake: FakeOpenAI, registry: ProviderRegistry
) -> None:
    fake.fail_next(status=500)

    with pytest.raises(ProviderUnavailable):
        await registry.embedding("openai").embed(EmbedRequest(model="m", input="x"))


async def test_slow_provider_times_out_as_unavailable(fake: FakeOpenAI) -> None:
    fake.hold()  # the fake answers only when released
    provider = OpenAIProvider(env_for(fake.base_url), timeout_seconds=0.2)
    started = time.monotonic()

    with pytest.raises(ProviderUnavailable) as caught:
        await provider.complete(ChatRequest(model="gpt-4", prompt="hi"))

    assert time.monotonic() - started < 1.9
    assert "did not answer within 0.2s" in caught.value.message
    assert caught.value.status_code is None
    await provider.aclose()
    # The abandoned request ends (and enters the fake's log) only when released: let it end
    # here, so it cannot appear in a later test's requests.
    fake.release()
    deadline = time.monotonic() + 10.0
    while fake.in_flight:
        assert time.monotonic() < deadline, "the released request never ended"
        await asyncio.sleep(0.01)


async def test_refused_connection_is_unavailable() -> None:
    port = free_port()
    provider = OpenAIProvider(env_for(f"http://127.0.0.1:{port}/v1"), timeout_seconds=2.0)

    with pytest.raises(ProviderUnavailable) as caught:
        await provider.complete(ChatRequest(model="gpt-4", prompt="hi"))

    assert f"127.0.0.1:{port}" in caught.value.message
    await provider.aclose()


async def test_wrong_key_is_an_auth_error_that_never_shows_the_key(fake: FakeOpenAI) -> None:
    wrong_key = "sk-wrong-secret-key-9876"
    provider = OpenAIProvider(env_for(fake.base_url, api_key=wrong_key))

    with pytest.raises(ProviderAuthError) as caught:
        await provider.complete(ChatRequest(model="gpt-4", prompt="hi"))

    error = caught.value
    assert (error.status_code, error.retryable) == (401, False)
    assert "OPENAI_API_KEY" in error.message
    # The fake, like OpenAI, quotes a masked key; none of it may reach logs.
    rendered = "".join(traceback.format_exception(error))
    assert wrong_key not in rendered
    assert wrong_key[-4:] not in rendered
    await provider.aclose()


async def test_forbidden_is_an_auth_error(fake: FakeOpenAI, registry: ProviderRegistry) -> None:
    fake.fail_next(status=403)

    with pytest.raises(ProviderAuthError) as caught:
        await registry.llm("openai").complete(ChatRequest(model="gpt-4", prompt="hi"))

    assert caught.value.status_code == 403


async def test_unknown_model_is_a_bad_request_with_the_providers_message(
    fake: FakeOpenAI, registry: ProviderRegistry
) -> None:
    fake.models = frozenset({"gpt-4o-mini"})

    with pytest.raises(ProviderBadRequest) as caught:
        await registry.llm("openai").complete(ChatRequest(model="gpt-nope", prompt="hi"))

    error = caught.value
    assert (error.status_code, error.retryable) == (404, False)
    assert "The model `gpt-nope` does not exist" in error.message
    assert "model_not_found" in error.message


@pytest.mark.parametrize("status", [400, 422])
async def test_rejected_request_is_a_bad_request_with_the_providers_message(
    fake: FakeOpenAI, registry: ProviderRegistry, status: int
) -> None:
    fake.fail_next(status=status, message="Invalid 'temperature': must be at most 2.")

    with pytest.raises(ProviderBadRequest) as caught:
        await registry.llm("openai").complete(
            ChatRequest(model="gpt-4", prompt="hi", temperature=9)
        )

    assert caught.value.status_code == status
    assert "Invalid 'temperature': must be at most 2." in caught.value.message


async def test_base_url_without_v1_gets_the_providers_invalid_url_message(
    fake: FakeOpenAI,
) -> None:
    provider = OpenAIProvider(env_for(fake.url))

    with pytest.raises(ProviderBadRequest) as caught:
        await provider.complete(ChatRequest(model="gpt-4", prompt="hi"))

    assert "Invalid URL (POST /chat/completions)" in caught.value.message
    await provider.aclose()


# -- credentials and configuration -----------------------------------------------------


async def test_missing_api_key_is_an_auth_error_without_calling_the_provider(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The SDK would fall back to the process environment; the resolver must be the only source.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-process-environment")
    provider = OpenAIProvider(env_for(fake.base_url, api_key=None))

    with pytest.raises(ProviderAuthError) as caught:
        await provider.complete(ChatRequest(model="gpt-4", prompt="hi"))

    assert "OPENAI_API_KEY" in caught.value.message
    assert caught.value.status_code is None
    assert fake.requests == []


async def test_base_url_from_the_resolver_wins_over_the_process_environment(
    fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
    with FakeOpenAI.start() as other:
        provider = OpenAIProvider(env_for(other.base_url))

        await provider.complete(ChatRequest(model="gpt-4", prompt="hi"))

        assert len(other.requests_to("/v1/chat/completions")) == 1
        assert fake.requests == []
        await provider.aclose()


async def test_secret_store_key_combines_with_environment_base_url(fake: FakeOpenAI) -> None:
    class SecretStore:
        async def resolve(self, provider: str, /) -> ProviderCredentials:
            return ProviderCredentials(api_key=API_KEY, base_url=None)

    environment = EnvCredentialResolver(
        {"OPENAI_API_KEY": "sk-stale-environment-key", "OPENAI_BASE_URL": fake.base_url}
    )
    provider = OpenAIProvider(FallbackCredentialResolver(SecretStore(), environment))

    result = await provider.complete(ChatRequest(model="gpt-4", prompt="hi"))

    assert result.text == "echo: hi"
    await provider.aclose()


def test_credentials_repr_hides_the_key() -> None:
    assert API_KEY not in repr(ProviderCredentials(api_key=API_KEY, base_url="http://x"))


async def test_warm_calls_reuse_one_connection_and_new_credentials_get_a_new_client(
    fake: FakeOpenAI,
) -> None:
    keys = {"current": API_KEY}

    class RotatingSecret:
        async def resolve(self, provider: str, /) -> ProviderCredentials:
            return ProviderCredentials(api_key=keys["current"], base_url=fake.base_url)

    provider = OpenAIProvider(RotatingSecret())
    for _ in range(3):
        await provider.complete(ChatRequest(model="gpt-4", prompt="hi"))
    fake.api_key = keys["current"] = "sk-rotated-key-0000000000"
    await provider.complete(ChatRequest(model="gpt-4", prompt="hi"))

    connections = [r.client for r in fake.requests]
    assert len(set(connections[:3])) == 1
    assert connections[3] != connections[0]
    assert [r.status for r in fake.requests] == [200] * 4
    await provider.aclose()


# Sockets left behind by a finished loop can only be reclaimed by the garbage collector.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_cached_client_survives_a_new_event_loop_per_invocation(fake: FakeOpenAI) -> None:
    # Lambda handlers commonly wrap each invocation in its own asyncio.run().
    provider = OpenAIProvider(env_for(fake.base_url))
    request = ChatRequest(model="gpt-4", prompt="warm")

    first = asyncio.run(provider.complete(request))
    second = asyncio.run(provider.complete(request))

    assert first.text == second.text == "echo: warm"
    asyncio.run(provider.aclose())
    del provider
    gc.collect()


# -- registry --------------------------------------------------------------------------


async def test_registry_shares_one_adapter_between_llm_and_embedding(
    registry: ProviderRegistry,
) -> None:
    assert registry.llm("openai") is registry.embedding("openai")
    assert registry.names == ("anthropic", "cohere", "openai")


@pytest.mark.parametrize("name", ["nonsense", "gemini"])
async def test_registry_refuses_providers_not_in_this_build(
    registry: ProviderRegistry, name: str
) -> None:
    with pytest.raises(UnsupportedProvider) as caught:
        registry.llm(name)

    assert isinstance(caught.value, ProviderBadRequest)
    assert not caught.value.retryable
    assert f"provider '{name}' is not available in this build" in caught.value.message


async def test_registry_refuses_embeddings_from_a_chat_only_provider() -> None:
    class ChatOnly:
        def __init__(self, resolver: CredentialResolver, *, timeout_seconds: float) -> None:
            pass

        async def complete(self, request: ChatRequest, /) -> ChatResult:
            return ChatResult(text="", input_tokens=0, output_tokens=0, model="", latency_ms=0)

        async def aclose(self) -> None:
            pass

    registry = ProviderRegistry(env_for("http://unused"), factories={"chatonly": ChatOnly})

    with pytest.raises(UnsupportedProvider, match="does not offer embeddings"):
        registry.embedding("chatonly")


# -- concurrency and cold start --------------------------------------------------------


async def test_200_concurrent_completions_overlap_on_one_event_loop(fake: FakeOpenAI) -> None:
    # Calls wait at the fake until all 200 have arrived, which on a loaded machine takes
    # longer than the shared fixture's 5 s timeout; timeouts are not what this is about.
    registry = ProviderRegistry(env_for(fake.base_url), timeout_seconds=120.0)
    fake.latency = 0.5
    provider = registry.llm("openai")
    threads_before = threading.active_count()
    started = time.monotonic()

    fake.hold()  # every call waits at the fake until the test has counted them
    calls = asyncio.gather(
        *(provider.complete(ChatRequest(model="gpt-4", prompt=f"n{i}")) for i in range(200))
    )
    deadline = time.monotonic() + 60
    while fake.held_count < 200 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    threads_during = threading.active_count()
    held = fake.release()
    results = await calls
    elapsed = time.monotonic() - started

    assert [r.text for r in results] == [f"echo: n{i}" for i in range(200)]
    # All 200 were in flight at once on one event loop (serially they would take 100 s);
    # the wall-time bound is only a backstop, loose enough for a loaded machine.
    await registry.aclose()
    # At least: a connection the loaded fake dropped can be re-sent once by the transport.
    assert held >= 200 and fake.max_in_flight >= 200
    assert elapsed < 50
    # asyncio's small shared resolver pool may start a few threads; never one per call.
    assert threads_during - threads_before < 20


def test_importing_providers_does_not_import_the_sdk() -> None:
    code = (
        "import sys\n"
        "import llm_orchestrator.providers as p\n"
        "from llm_orchestrator.providers import openai_provider, registry\n"
        "r = p.ProviderRegistry(p.EnvCredentialResolver({}))\n"
        "r.llm('openai'); r.embedding('openai')\n"
        "print(sorted(m for m in sys.modules if m == 'openai' or m.startswith('openai.')))\n"
    )

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert out.stdout.strip() == "[]"


def test_fake_runs_in_a_subprocess_with_http_controls() -> None:
    command = [sys.executable, "-m", "tests.fakes.openai_server", "--port", "0"]
    with subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            prefix, base_url = process.stdout.readline().split()
            assert prefix == READY_PREFIX
            control = base_url.removesuffix("/v1") + "/_fake"

            async def scenario() -> None:
                provider = OpenAIProvider(env_for(base_url))
                result = await provider.complete(ChatRequest(model="m", prompt="ping"))
                assert result.text == "echo: ping"
                httpx.post(
                    f"{control}/failures", json={"status": 429, "retry_after": 3}
                ).raise_for_status()
                with pytest.raises(ProviderRateLimited) as caught:
                    await provider.complete(ChatRequest(model="m", prompt="again"))
                assert caught.value.retry_after == 3.0
                await provider.aclose()

            asyncio.run(scenario())
            log = httpx.get(f"{control}/requests").json()
            assert [(r["path"], r["status"]) for r in log] == [
                ("/v1/chat/completions", 200),
                ("/v1/chat/completions", 429),
            ]
        finally:
            process.terminate()
        assert process.wait(timeout=10) == 0
