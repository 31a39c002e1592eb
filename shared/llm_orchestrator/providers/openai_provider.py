"""OpenAI, and any server that speaks its API, through the official SDK's async client.

The module is named ``openai_provider`` rather than ``openai`` so that no reader, tool
or ``sys.path`` accident can confuse it with the SDK package.

The SDK is imported on first use, never at module import: importing it costs a Lambda
cold start noticeable time, and the handlers that never call a model should not pay it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .base import (
    ChatRequest,
    ChatResult,
    CredentialResolver,
    EmbedRequest,
    EmbedResult,
)
from .common import (
    DEFAULT_TIMEOUT_SECONDS,
    clean_detail,
    float_vector,
    from_status,
    message_of,
    missing_key,
    redact,
    token_count,
    unreachable,
)
from .errors import (
    ProviderAuthError,
    ProviderError,
    ProviderInvalidResponse,
    ProviderQuotaExceeded,
    ProviderUnavailable,
)

if TYPE_CHECKING:
    import ssl

    from openai import APIStatusError, AsyncOpenAI, OpenAIError

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_TIMEOUT_SECONDS", "OpenAIProvider"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"

# Under load, concurrent requests spread over up to this many clients, each with its own
# connection pool: httpcore's pool does work proportional to (waiting requests x open
# connections) whenever a request starts or ends, which at hundreds of concurrent calls
# costs more CPU than the calls themselves (measured: ~1.5 s of CPU for 500 concurrent
# calls through one pool; 500 concurrent calls through this adapter cost 2.8-4.5 ms of CPU
# each with 8 shards of 32, 2.0-2.3 ms with 64 of 8). A new shard opens only once every
# open one is this busy, so light traffic keeps reusing one client and its warm
# connections; a shard costs ~0.3 ms to open (they share one TLS context).
CLIENT_SHARDS = 64
SHARD_BUSY_AT = 8

_ssl_context: ssl.SSLContext | None = None


def _shared_ssl_context() -> ssl.SSLContext:
    """The TLS context every client of this process verifies servers with, built as the
    SDK's own transport would build it (the same trust store and environment).

    Built once: left to itself, each client builds its own when it is created, loading the
    whole CA bundle (~25 ms of CPU, measured), and a burst of calls opens a new shard
    while the earlier ones wait for their answers. A context is safe to share between
    connections, clients and event loops."""
    global _ssl_context
    if _ssl_context is None:
        try:  # the transport package of the SDK's current releases
            from httpx2 import create_ssl_context
        except ImportError:  # earlier releases use httpx
            from httpx import create_ssl_context
        _ssl_context = create_ssl_context()
    return _ssl_context


@dataclass(slots=True)
class _CachedClient:
    client: AsyncOpenAI
    # An httpx connection pool belongs to the event loop that opened it; a Lambda that
    # runs each invocation under a fresh ``asyncio.run`` must not reuse it on the next loop.
    loop: asyncio.AbstractEventLoop
    # OpenAI itself rejects ``max_tokens`` for reasoning models and wants
    # ``max_completion_tokens``; many compatible servers only know ``max_tokens``.
    is_openai: bool
    in_flight: int = 0


class OpenAIProvider:
    """Chat completions and embeddings against ``base_url`` (OpenAI's API by default).

    Credentials are resolved on every call, so a rotated secret takes effect without a
    cold start; clients are cached per (api key, base URL) so warm calls reuse their
    connections. The SDK's own retries are off: retrying is the state machine's job, and
    two layers of retries multiply into minutes of hidden waiting.
    """

    def __init__(
        self,
        resolver: CredentialResolver,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        name: str = "openai",
    ) -> None:
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        self._resolver = resolver
        self._timeout_seconds = timeout_seconds
        self._name = name
        self._clients: dict[tuple[str, str, int], _CachedClient] = {}

    @property
    def name(self) -> str:
        return self._name

    async def complete(self, request: ChatRequest, /) -> ChatResult:
        cached, api_key = await self._client()
        messages: list[dict[str, str]] = []
        if request.system is not None:
            messages.append({"role": "system", "content": request.system})
        messages.append({"role": "user", "content": request.prompt})
        for turn in request.follow_up:
            role = "assistant" if turn.role == "assistant" else "user"
            messages.append({"role": role, "content": turn.content})
        body: dict[str, object] = {"model": request.model, "messages": messages}
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.max_tokens is not None:
            body["max_completion_tokens" if cached.is_openai else "max_tokens"] = request.max_tokens
        response_format = _response_format(request)
        if response_format is not None:
            body["response_format"] = response_format
        reply, latency_ms = await self._timed(cached, api_key, "/chat/completions", body)
        return self._chat_result(reply, request.model, latency_ms)

    def _chat_result(self, reply: object, model: str, latency_ms: float) -> ChatResult:
        # A body that is JSON but not an object, or not JSON at all (an HTML page from a
        # proxy), reaches us as a plain list or string.
        reply = _object(reply)
        choices = reply.get("choices")
        choice = _object(choices[0] if isinstance(choices, list) and choices else None)
        message = _object(choice.get("message"))
        if not message:
            raise self._invalid("a completion without choices")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise self._invalid("a completion whose message content is not text")
        usage = _object(reply.get("usage"))
        refusal = message.get("refusal")
        return ChatResult(
            text=content or "",
            input_tokens=token_count(usage.get("prompt_tokens")),
            output_tokens=token_count(usage.get("completion_tokens")),
            model=_text(reply.get("model")) or model,
            latency_ms=latency_ms,
            # With a schema, a model that declines says so here instead of in ``content``.
            refusal=_text(refusal) or None,
            cut_off=choice.get("finish_reason") == "length",
        )

    async def embed(self, request: EmbedRequest, /) -> EmbedResult:
        cached, api_key = await self._client()
        expected = 1 if isinstance(request.input, str) else len(request.input)
        # ``encoding_format`` asked for explicitly: the SDK may otherwise request base64,
        # which not every compatible server implements.
        body: dict[str, object] = {
            "model": request.model,
            "input": request.input,
            "encoding_format": "float",
        }
        reply, latency_ms = await self._timed(cached, api_key, "/embeddings", body)
        reply = _object(reply)
        data = reply.get("data")
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise self._invalid("an embedding reply without data")
        vectors: list[list[float]] = []
        for item in sorted(data, key=_index_of):
            vector = float_vector(item.get("embedding"))
            if vector is None:
                raise self._invalid("an embedding that is not a list of numbers")
            vectors.append(vector)
        if len(vectors) != expected:
            raise self._invalid(f"{len(vectors)} embeddings for {expected} inputs")
        return EmbedResult(
            vectors=vectors,
            input_tokens=token_count(_object(reply.get("usage")).get("prompt_tokens")),
            model=_text(reply.get("model")) or request.model,
            latency_ms=latency_ms,
        )

    def _invalid(self, what: str) -> ProviderInvalidResponse:
        return ProviderInvalidResponse(f"{self._name} returned {what}", provider=self._name)

    async def aclose(self) -> None:
        """Close the cached clients; call it before the event loop that used them ends."""
        clients, self._clients = self._clients, {}
        loop = asyncio.get_running_loop()
        for cached in clients.values():
            if cached.loop is loop:
                await cached.client.close()
            elif cached.loop.is_closed():
                await _abandon(cached.client)

    async def _client(self) -> tuple[_CachedClient, str]:
        credentials = await self._resolver.resolve(self._name)
        if not credentials.api_key:
            raise missing_key(self._name)
        # Always passed explicitly: left unset, the SDK would read OPENAI_BASE_URL from the
        # process environment behind the resolver's back.
        base_url = credentials.base_url or DEFAULT_BASE_URL
        key = (credentials.api_key, base_url, self._shard(credentials.api_key, base_url))
        loop = asyncio.get_running_loop()
        cached = self._clients.get(key)
        if cached is not None and cached.loop is not loop:
            if cached.loop.is_closed():
                await _abandon(cached.client)
            cached = None
        if cached is None:
            cached = _CachedClient(
                client=self._build_client(credentials.api_key, base_url),
                loop=loop,
                is_openai=urlsplit(base_url).hostname == "api.openai.com",
            )
            self._clients[key] = cached
        return cached, credentials.api_key

    def _shard(self, api_key: str, base_url: str) -> int:
        """The least busy open shard, or a new one when every open shard is busy."""
        # Shards open in index order (a new one takes the first free index), so the first
        # missing index ends the open ones.
        best, best_load = 0, -1
        for index in range(CLIENT_SHARDS):
            cached = self._clients.get((api_key, base_url, index))
            if cached is None:
                return index if best_load >= SHARD_BUSY_AT else best
            if cached.in_flight == 0:
                return index
            if best_load < 0 or cached.in_flight < best_load:
                best, best_load = index, cached.in_flight
        return best

    def _build_client(self, api_key: str, base_url: str) -> AsyncOpenAI:
        from openai import AsyncOpenAI, DefaultAsyncHttpxClient

        return AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=self._timeout_seconds,
            # The SDK's own HTTP client with its defaults (limits, redirects), each shard
            # its own connection pool, all of them one TLS context.
            http_client=DefaultAsyncHttpxClient(
                verify=_shared_ssl_context(), timeout=self._timeout_seconds
            ),
        )

    async def _timed(
        self, cached: _CachedClient, api_key: str, path: str, body: dict[str, object]
    ) -> tuple[object, float]:
        """POST ``body`` to ``path`` through the SDK client; the reply's JSON as it came.

        The SDK's typed methods (``chat.completions.create``) cost twice the CPU of the
        call itself: they walk every parameter through the SDK's type-driven transform and
        build a typed model of every reply, recursively. The bodies built here are plain
        JSON already, and the few reply fields read are checked here, so the call goes
        through the client's ``post`` with ``cast_to=object`` (the SDK's documented way to
        reach an endpoint): same client, connections, headers, timeout and error types.
        """
        from openai import OpenAIError

        started = time.perf_counter()
        cached.in_flight += 1
        try:
            reply: object = await cached.client.post(path, body=body, cast_to=object)
        except OpenAIError as exc:
            error = _translate(exc, self._name, api_key, self._timeout_seconds)
            # The SDK's exception text may quote a masked key ("sk-...abcd"); keep it out
            # of tracebacks that end up in logs.
            raise error from (None if isinstance(error, ProviderAuthError) else exc)
        except ValueError:
            # A 2xx JSON body that does not parse (a truncated reply): the SDK lets the
            # decoder's error through.
            raise ProviderInvalidResponse(
                f"{self._name} returned a reply that is not valid JSON", provider=self._name
            ) from None
        finally:
            cached.in_flight -= 1
        return reply, (time.perf_counter() - started) * 1000.0


def _object(value: object) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (a reply's fields are optional)."""
    return value if isinstance(value, dict) else {}


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _index_of(item: dict[str, Any]) -> int:
    index = item.get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) else 0


def _response_format(request: ChatRequest) -> dict[str, Any] | None:
    """Structured Outputs: the schema as ``response_format``, strict only when the step's
    schema meets strict mode's rules (otherwise OpenAI would refuse the request)."""
    if request.output is None:
        return None
    return {
        "type": "json_schema",
        "json_schema": {
            "name": request.output.name,
            "schema": dict(request.output.schema),
            "strict": request.output.strict,
        },
    }


async def _abandon(client: AsyncOpenAI) -> None:
    # The client's connections belong to a loop that is already closed, so closing them
    # fails. Trying anyway marks the client closed, which stops the SDK's finaliser from
    # scheduling the same doomed close on whatever loop runs when the client is collected
    # (an ERROR-level "Task exception was never retrieved" in the logs). The garbage
    # collector reclaims the sockets.
    with contextlib.suppress(RuntimeError):
        await client.close()


def _translate(
    exc: OpenAIError, provider: str, api_key: str, timeout_seconds: float
) -> ProviderError:
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return ProviderUnavailable(
            f"{provider} did not answer within {timeout_seconds:g}s", provider=provider
        )
    if isinstance(exc, openai.APIConnectionError):
        reason = redact(str(exc.__cause__ or exc), api_key)
        return unreachable(provider, str(exc.request.url), reason)
    if isinstance(exc, openai.APIStatusError):
        return _translate_status(exc, provider, api_key)
    return ProviderInvalidResponse(
        f"{provider} returned an unusable response: {redact(str(exc), api_key)}",
        provider=provider,
    )


def _translate_status(exc: APIStatusError, provider: str, api_key: str) -> ProviderError:
    status = exc.status_code
    code = exc.code or exc.type
    # Deliberately no 401 text in any message: OpenAI's 401 message quotes the key, and
    # ``from_status`` leaves it out.
    detail = clean_detail(message_of(exc.body), api_key)
    if status == 429 and exc.code == "insufficient_quota":
        return ProviderQuotaExceeded(
            f"{provider} quota exhausted (HTTP {status}, {code}): {detail}",
            provider=provider,
            status_code=status,
        )
    return from_status(provider, status, detail=detail, headers=exc.response.headers, code=code)
