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
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar
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
    from_status,
    message_of,
    missing_key,
    redact,
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
    from openai import APIStatusError, AsyncOpenAI, OpenAIError
    from openai.types.chat import ChatCompletionMessageParam
    from openai.types.shared_params import ResponseFormatJSONSchema

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_TIMEOUT_SECONDS", "OpenAIProvider"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"

_T = TypeVar("_T")

# Under load, concurrent requests spread over up to this many clients, each with its own
# connection pool: httpcore's pool does work proportional to (waiting requests x open
# connections) whenever a request starts or ends, which at hundreds of concurrent calls
# costs more CPU than the calls themselves (measured: ~1.5 s of CPU for 500 concurrent
# calls through one pool). A new shard opens only once every open one is this busy, so
# light traffic keeps reusing one client and its warm connections.
CLIENT_SHARDS = 8
SHARD_BUSY_AT = 32


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
        from openai import omit
        from openai.types.chat import ChatCompletion

        cached, api_key = await self._client()
        messages: list[ChatCompletionMessageParam] = []
        if request.system is not None:
            messages.append({"role": "system", "content": request.system})
        messages.append({"role": "user", "content": request.prompt})
        for turn in request.follow_up:
            if turn.role == "assistant":
                messages.append({"role": "assistant", "content": turn.content})
            else:
                messages.append({"role": "user", "content": turn.content})
        limit = omit if request.max_tokens is None else request.max_tokens
        completion, latency_ms = await self._timed(
            cached,
            api_key,
            cached.client.chat.completions.create(
                model=request.model,
                messages=messages,
                temperature=omit if request.temperature is None else request.temperature,
                max_completion_tokens=limit if cached.is_openai else omit,
                max_tokens=omit if cached.is_openai else limit,
                response_format=_response_format(request) or omit,
            ),
        )
        # A body that is JSON but not an object, or not JSON at all (an HTML page from a
        # proxy), reaches us as a plain list or string rather than a ChatCompletion.
        if not isinstance(completion, ChatCompletion) or not completion.choices:
            raise ProviderInvalidResponse(
                f"{self._name} returned a completion without choices", provider=self._name
            )
        usage = completion.usage
        message = completion.choices[0].message
        return ChatResult(
            text=message.content or "",
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
            model=completion.model or request.model,
            latency_ms=latency_ms,
            # With a schema, a model that declines says so here instead of in ``content``.
            refusal=getattr(message, "refusal", None) or None,
            cut_off=completion.choices[0].finish_reason == "length",
        )

    async def embed(self, request: EmbedRequest, /) -> EmbedResult:
        from openai.types import CreateEmbeddingResponse

        cached, api_key = await self._client()
        expected = 1 if isinstance(request.input, str) else len(request.input)
        response, latency_ms = await self._timed(
            cached,
            api_key,
            # Asked for explicitly: the SDK may otherwise request base64, which not every
            # compatible server implements.
            cached.client.embeddings.create(
                model=request.model, input=request.input, encoding_format="float"
            ),
        )
        if not isinstance(response, CreateEmbeddingResponse) or not isinstance(response.data, list):
            raise ProviderInvalidResponse(
                f"{self._name} returned an embedding reply without data", provider=self._name
            )
        vectors = [item.embedding for item in sorted(response.data, key=lambda d: d.index)]
        if len(vectors) != expected:
            raise ProviderInvalidResponse(
                f"{self._name} returned {len(vectors)} embeddings for {expected} inputs",
                provider=self._name,
            )
        return EmbedResult(
            vectors=vectors,
            input_tokens=response.usage.prompt_tokens if response.usage else 0,
            model=response.model or request.model,
            latency_ms=latency_ms,
        )

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
        loads = [
            (cached.in_flight, index)
            for index in range(CLIENT_SHARDS)
            if (cached := self._clients.get((api_key, base_url, index))) is not None
        ]
        if not loads:
            return 0
        busiest_allowed, index = min(loads)
        if busiest_allowed >= SHARD_BUSY_AT and len(loads) < CLIENT_SHARDS:
            return len(loads)
        return index

    def _build_client(self, api_key: str, base_url: str) -> AsyncOpenAI:
        from openai import AsyncOpenAI

        return AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=self._timeout_seconds,
        )

    async def _timed(
        self, cached: _CachedClient, api_key: str, call: Awaitable[_T]
    ) -> tuple[_T, float]:
        from openai import OpenAIError

        started = time.perf_counter()
        cached.in_flight += 1
        try:
            result = await call
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
        return result, (time.perf_counter() - started) * 1000.0


def _response_format(request: ChatRequest) -> ResponseFormatJSONSchema | None:
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
