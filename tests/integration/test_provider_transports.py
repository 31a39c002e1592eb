"""The OpenAI, Anthropic and Cohere adapters over both HTTP transports their SDKs ship.

The server installs aiohttp and its clients send through the SDKs' aiohttp transport; the
Lambda step runner's bundle leaves aiohttp out and its clients use httpx2's. Each
behaviour a user relies on (an answer, error mapping, timeouts, a refused or dropped
connection, a fresh event loop per invocation) is checked over each transport, against
the fakes speaking the vendors' wire protocols.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from llm_orchestrator.providers import (
    AnthropicProvider,
    ChatRequest,
    CohereProvider,
    EnvCredentialResolver,
    OpenAIProvider,
    ProviderAuthError,
    ProviderRateLimited,
    ProviderUnavailable,
)
from llm_orchestrator.providers.transport import SDK_PLATFORM_HEADERS, Transport, default_transport
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.base import FakeProviderServer
from tests.fakes.cohere_server import FakeCohere
from tests.fakes.openai_server import FakeOpenAI
from tests.support import free_port

OPENAI_KEY = "sk-transport-openai-5e1d0c"
ANTHROPIC_KEY = "sk-ant-transport-9a4b7f"
COHERE_KEY = "co-transport-3c8e2d"
REPO_ROOT = Path(__file__).resolve().parents[2]
TRANSPORTS: tuple[Transport, ...] = ("aiohttp", "httpx")
PROVIDERS = ("openai", "anthropic", "cohere")
ENDPOINT = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages", "cohere": "/v2/chat"}
KEY = {"openai": OPENAI_KEY, "anthropic": ANTHROPIC_KEY, "cohere": COHERE_KEY}
VARIABLES = {
    "openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL"),
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
    "cohere": ("CO_API_KEY", "CO_API_URL"),
}
FACTORY = {"openai": OpenAIProvider, "anthropic": AnthropicProvider, "cohere": CohereProvider}

Adapter = OpenAIProvider | AnthropicProvider | CohereProvider


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.start(api_key=OPENAI_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def anthropic_fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic.start(api_key=ANTHROPIC_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def cohere_fake() -> Iterator[FakeCohere]:
    with FakeCohere.start(api_key=COHERE_KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_fakes(
    openai_fake: FakeOpenAI, anthropic_fake: FakeAnthropic, cohere_fake: FakeCohere
) -> None:
    openai_fake.reset()
    anthropic_fake.reset()
    cohere_fake.reset()


def adapter(
    name: str, base_url: str, transport: Transport, *, timeout: float = 5.0, key: str | None = None
) -> Adapter:
    key_variable, url_variable = VARIABLES[name]
    resolver = EnvCredentialResolver({key_variable: key or KEY[name], url_variable: base_url})
    return FACTORY[name](resolver, timeout_seconds=timeout, transport=transport)


@pytest.fixture
def fakes(
    openai_fake: FakeOpenAI, anthropic_fake: FakeAnthropic, cohere_fake: FakeCohere
) -> dict[str, FakeProviderServer]:
    return {"openai": openai_fake, "anthropic": anthropic_fake, "cohere": cohere_fake}


@asynccontextmanager
async def opened(provider: Adapter) -> AsyncIterator[Adapter]:
    try:
        yield provider
    finally:
        await provider.aclose()


async def failure_of(provider: Adapter) -> Exception:
    with pytest.raises(Exception) as caught:
        await provider.complete(ChatRequest(model="m", prompt="hi"))
    return caught.value


each = pytest.mark.parametrize(
    ("name", "transport"), [(name, transport) for name in PROVIDERS for transport in TRANSPORTS]
)


@each
async def test_warm_calls_answer_over_one_kept_alive_connection(
    name: str, transport: Transport, fakes: dict[str, FakeProviderServer]
) -> None:
    fake = fakes[name]
    async with opened(adapter(name, fake.base_url, transport)) as provider:
        results = [
            await provider.complete(ChatRequest(model="m", prompt=f"call {i}")) for i in range(3)
        ]

    assert provider.transport == transport
    assert [r.text for r in results] == ["echo: call 0", "echo: call 1", "echo: call 2"]
    assert all(r.input_tokens > 0 and r.output_tokens > 0 for r in results)
    assert len({call.client for call in fake.requests_to(ENDPOINT[name])}) == 1


@pytest.mark.parametrize(
    ("name", "transport"), [(name, t) for name in ("openai", "anthropic") for t in TRANSPORTS]
)
async def test_requests_leave_out_the_sdks_platform_headers_but_name_the_sdk(
    name: str, transport: Transport, fakes: dict[str, FakeProviderServer]
) -> None:
    fake = fakes[name]
    async with opened(adapter(name, fake.base_url, transport)) as provider:
        await provider.complete(ChatRequest(model="m", prompt="hi"))

    [call] = fake.requests_to(ENDPOINT[name])
    assert not {header.lower() for header in SDK_PLATFORM_HEADERS} & call.headers.keys()
    assert call.headers["user-agent"].startswith(("AsyncOpenAI/", "AsyncAnthropic/"))


@each
async def test_concurrent_calls_all_answer(
    name: str, transport: Transport, fakes: dict[str, FakeProviderServer]
) -> None:
    fake = fakes[name]
    fake.latency = 0.05
    async with opened(adapter(name, fake.base_url, transport, timeout=60.0)) as provider:
        results = await asyncio.gather(
            *(provider.complete(ChatRequest(model="m", prompt=f"n{i}")) for i in range(50))
        )

    assert [r.text for r in results] == [f"echo: n{i}" for i in range(50)]
    assert fake.max_in_flight > 1


@each
async def test_status_errors_map_as_on_any_transport(
    name: str, transport: Transport, fakes: dict[str, FakeProviderServer]
) -> None:
    fake = fakes[name]
    async with opened(adapter(name, fake.base_url, transport)) as provider:
        fake.fail_next(429, retry_after=7)
        limited = await failure_of(provider)
        fake.fail_next(503, message="the backend fell over")
        down = await failure_of(provider)

    assert isinstance(limited, ProviderRateLimited) and limited.retry_after == 7.0
    assert isinstance(down, ProviderUnavailable) and down.retryable
    assert "HTTP 503" in down.message and "the backend fell over" in down.message
    # The SDK's own retries stay off whatever sends the request: one error, one request.
    assert len(fake.requests_to(ENDPOINT[name])) == 2


@each
async def test_a_wrong_key_is_refused_without_showing_it(
    name: str, transport: Transport, fakes: dict[str, FakeProviderServer]
) -> None:
    wrong = f"sk-wrong-{name}-{transport}-000000"
    async with opened(adapter(name, fakes[name].base_url, transport, key=wrong)) as provider:
        error = await failure_of(provider)

    assert isinstance(error, ProviderAuthError)
    assert wrong not in str(error) and error.__cause__ is None


@each
async def test_a_slow_provider_times_out(
    name: str, transport: Transport, fakes: dict[str, FakeProviderServer]
) -> None:
    fake = fakes[name]
    fake.hold()  # the request waits at the fake until released
    try:
        async with opened(adapter(name, fake.base_url, transport, timeout=0.3)) as provider:
            error = await failure_of(provider)
    finally:
        fake.release()

    assert isinstance(error, ProviderUnavailable)
    assert "did not answer within 0.3s" in error.message


@each
async def test_a_refused_connection_is_unreachable_not_a_timeout(
    name: str, transport: Transport
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}" + ("/v1" if name == "openai" else "")  # the SDK's path
    async with opened(adapter(name, url, transport)) as provider:
        error = await failure_of(provider)

    assert isinstance(error, ProviderUnavailable) and error.retryable
    assert f"{name} could not be reached at 127.0.0.1:{port}" in error.message


@each
async def test_a_provider_that_hangs_up_is_unreachable_not_a_timeout(
    name: str, transport: Transport
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the request's head, then no answer at all
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}" + ("/v1" if name == "openai" else "")  # the SDK's path
    try:
        async with opened(adapter(name, url, transport)) as provider:
            error = await failure_of(provider)
    finally:
        server.close()
        await server.wait_closed()

    assert isinstance(error, ProviderUnavailable) and error.retryable
    assert f"{name} could not be reached at 127.0.0.1:{port}" in error.message


@each
async def test_an_endpoint_with_credentials_in_its_url_answers(
    name: str, transport: Transport, fakes: dict[str, FakeProviderServer]
) -> None:
    # A gateway in front of the provider that wants basic auth: httpx2 sends the URL's
    # credentials as the Authorization header (the fake then checks no key).
    fake = fakes[name]
    fake.api_key = None
    url = fake.base_url.replace("http://", "http://gateway-user:gateway-pass@")
    async with opened(adapter(name, url, transport)) as provider:
        result = await provider.complete(ChatRequest(model="m", prompt="through the gateway"))

    assert result.text == "echo: through the gateway"
    [call] = fake.requests_to(ENDPOINT[name])
    assert call.headers["authorization"].startswith("Bas")  # the fake masks the rest


# Sockets left behind by a finished loop can only be reclaimed by the garbage collector.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@each
def test_a_fresh_event_loop_per_invocation_gets_a_working_client(
    name: str, transport: Transport, fakes: dict[str, FakeProviderServer]
) -> None:
    # What a Lambda handler does: each invocation under its own asyncio.run().
    provider = adapter(name, fakes[name].base_url, transport)
    request = ChatRequest(model="m", prompt="warm")

    first = asyncio.run(provider.complete(request))
    second = asyncio.run(provider.complete(request))
    asyncio.run(provider.aclose())

    assert first.text == second.text == "echo: warm"
    assert len({call.client for call in fakes[name].requests_to(ENDPOINT[name])}) == 2


# -- which transport a process gets ------------------------------------------------------

_WITHOUT_AIOHTTP = """
import asyncio, json, sys
sys.modules["aiohttp"] = None  # as in the Lambda bundle: an import of it fails
from llm_orchestrator.providers import (
    AnthropicProvider, ChatRequest, CohereProvider, EnvCredentialResolver, OpenAIProvider,
)
resolver = EnvCredentialResolver(json.loads(sys.argv[1]))

async def main():
    found = {}
    for factory in (OpenAIProvider, AnthropicProvider, CohereProvider):
        provider = factory(resolver)
        result = await provider.complete(ChatRequest(model="m", prompt="lambda"))
        found[provider.name] = [provider.transport, result.text]
        await provider.aclose()
    return found

found = asyncio.run(main())
found["aiohttp imported"] = sys.modules.get("aiohttp") is not None
print(json.dumps(found))
"""


def test_without_aiohttp_the_clients_use_httpx_and_never_import_it(
    fakes: dict[str, FakeProviderServer],
) -> None:
    environ = {}
    for name, (key_variable, url_variable) in VARIABLES.items():
        environ[key_variable], environ[url_variable] = KEY[name], fakes[name].base_url

    completed = subprocess.run(
        [sys.executable, "-c", _WITHOUT_AIOHTTP, json.dumps(environ)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == {
        "openai": ["httpx", "echo: lambda"],
        "anthropic": ["httpx", "echo: lambda"],
        "cohere": ["httpx", "echo: lambda"],
        "aiohttp imported": False,
    }


@pytest.mark.parametrize("name", PROVIDERS)
async def test_where_aiohttp_is_installed_the_clients_use_it(
    name: str, fakes: dict[str, FakeProviderServer]
) -> None:
    # The dev install carries the SDKs' aiohttp extras, as the server's does.
    key_variable, url_variable = VARIABLES[name]
    resolver = EnvCredentialResolver({key_variable: KEY[name], url_variable: fakes[name].base_url})
    async with opened(FACTORY[name](resolver)) as provider:
        result = await provider.complete(ChatRequest(model="m", prompt="server"))

    assert result.text == "echo: server"
    assert default_transport() == "aiohttp"
    assert provider.transport == "aiohttp"
