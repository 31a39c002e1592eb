"""Cohere's v2 API (chat and embed) through the official SDK's ``AsyncClientV2``.

The SDK is imported on first use, never at module import. ``CO_API_URL`` is always passed
as ``base_url``: the SDK reads that variable only once, as a default argument evaluated at
its import, so a secret stored later would otherwise never apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, cast

from .base import ChatRequest, ChatResult, EmbedRequest, EmbedResult
from .common import (
    auth_refused,
    clean_detail,
    float_vector,
    from_status,
    message_of,
    redact,
    token_count,
    unreachable,
)
from .errors import (
    ProviderError,
    ProviderInvalidResponse,
    ProviderUnavailable,
)
from .transport import HttpxSdkAdapter, aiohttp_connection_failure, shared_ssl_context

if TYPE_CHECKING:
    from cohere import AsyncClientV2

__all__ = [
    "DEFAULT_BASE_URL",
    "EMBED_BATCH_SIZE",
    "QUERY_INPUT_TYPE",
    "DOCUMENT_INPUT_TYPE",
    "CohereProvider",
]

DEFAULT_BASE_URL = "https://api.cohere.com"
EMBED_BATCH_SIZE = 96
"""Cohere embeds at most 96 texts per call; longer lists go in consecutive calls."""
JSON_INSTRUCTION = "Generate a JSON object that matches the JSON schema you are given."
"""Sent as a system message with every structured-output request (see ``complete``)."""
QUERY_INPUT_TYPE = "search_query"
DOCUMENT_INPUT_TYPE = "search_document"
# 498 is Cohere's "invalid token"; 499 a request the gateway dropped (worth another try).
_AUTH_STATUSES = frozenset({401, 403, 498})
_RETRYABLE_STATUSES = frozenset({408, 409, 499})


class CohereProvider(HttpxSdkAdapter["AsyncClientV2"]):
    """Chat and embeddings against ``base_url`` (Cohere's API by default).

    One client per credential set and event loop, reused, over aiohttp where it is
    installed (``transport.py``); the SDK's own retries are off (the state machine's Retry
    owns retrying).
    """

    default_name: ClassVar[str] = "cohere"
    default_base_url: ClassVar[str] = DEFAULT_BASE_URL

    async def complete(self, request: ChatRequest, /) -> ChatResult:
        client, api_key, base_url = await self._clients.get()
        system = request.system
        options: dict[str, Any] = {}
        if request.output is not None:
            # Cohere's JSON mode with a schema. Its documentation asks for the messages to
            # say JSON is wanted too (without it a model may ramble until its token limit).
            options["response_format"] = {
                "type": "json_object",
                "json_schema": dict(request.output.schema),
            }
            system = JSON_INSTRUCTION if system is None else f"{system}\n\n{JSON_INSTRUCTION}"
        messages: list[Any] = []
        if system is not None:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": request.prompt})
        messages.extend({"role": turn.role, "content": turn.content} for turn in request.follow_up)
        if request.temperature is not None:
            options["temperature"] = request.temperature
        if request.max_tokens is not None:
            options["max_tokens"] = request.max_tokens
        response, latency_ms = await self._call(
            client.chat(model=request.model, messages=messages, **options), api_key, base_url
        )
        content = getattr(getattr(response, "message", None), "content", None)
        if not isinstance(content, list):
            raise ProviderInvalidResponse(
                f"{self._name} returned a chat reply without message content",
                provider=self._name,
            )
        texts: list[str] = []
        for item in content:
            text = getattr(item, "text", None)
            if getattr(item, "type", None) == "text" and isinstance(text, str):
                texts.append(text)
        input_tokens, output_tokens = _chat_usage(getattr(response, "usage", None))
        return ChatResult(
            text="".join(texts),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            model=request.model,
            latency_ms=latency_ms,
            cut_off=getattr(response, "finish_reason", None) == "MAX_TOKENS",
        )

    async def embed(self, request: EmbedRequest, /) -> EmbedResult:
        client, api_key, base_url = await self._clients.get()
        single = isinstance(request.input, str)
        texts: list[str] = [request.input] if isinstance(request.input, str) else request.input
        input_type = request.input_type or (QUERY_INPUT_TYPE if single else DOCUMENT_INPUT_TYPE)
        vectors: list[list[float]] = []
        tokens = 0
        latency_ms = 0.0
        for start in range(0, len(texts), EMBED_BATCH_SIZE):
            batch = texts[start : start + EMBED_BATCH_SIZE]
            response, elapsed = await self._call(
                client.embed(
                    model=request.model,
                    texts=batch,
                    input_type=input_type,
                    embedding_types=["float"],
                ),
                api_key,
                base_url,
            )
            latency_ms += elapsed
            found = _float_embeddings(response)
            if found is None or len(found) != len(batch):
                count = "no" if found is None else str(len(found))
                raise ProviderInvalidResponse(
                    f"{self._name} returned {count} float embeddings for {len(batch)} inputs",
                    provider=self._name,
                )
            vectors.extend(found)
            tokens += _embed_tokens(response)
        return EmbedResult(
            vectors=vectors, input_tokens=tokens, model=request.model, latency_ms=latency_ms
        )

    def _build_client(self, api_key: str, base_url: str) -> AsyncClientV2:
        import cohere

        return cohere.AsyncClientV2(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=self._timeout_seconds,
            client_name="llm-orchestrator",
            log_warning_experimental_features=False,
            # Always handed over: left to itself, the SDK sends through aiohttp whenever
            # ``httpx-aiohttp`` happens to be installed, whatever this adapter chose.
            httpx_client=self._http_client(cohere, base_url),
        )

    def _httpx_client(self, sdk: ModuleType) -> Any:
        """What the SDK builds for itself without aiohttp: TCP keepalive probes on every
        connection (and on the environment's proxies), so a long call survives a NAT or
        load balancer reaping idle connections."""
        import httpx

        try:
            from cohere.core.http_client import (
                get_async_keepalive_proxy_mounts,
                get_keepalive_socket_options,
            )
        except ImportError:  # releases without the keepalive default
            return super()._httpx_client(sdk)
        transport = httpx.AsyncHTTPTransport(
            verify=shared_ssl_context(),
            socket_options=get_keepalive_socket_options(idle=60, intvl=30, cnt=5),
        )
        return sdk.DefaultAsyncHttpxClient(
            timeout=self._timeout_seconds,
            transport=transport,
            mounts=get_async_keepalive_proxy_mounts(idle=60, intvl=30, cnt=5),
        )

    async def _close_client(self, client: AsyncClientV2) -> None:
        # The SDK's own way to release the connection pool (what ``async with`` does).
        await client.__aexit__(None, None, None)

    def _vendor_errors(self) -> tuple[type[BaseException], ...]:
        import httpx
        from cohere.core.api_error import ApiError
        from cohere.core.parse_error import ParsingError

        return (ApiError, ParsingError, httpx.HTTPError)

    def _translate(self, exc: BaseException, api_key: str, base_url: str) -> ProviderError:
        return _translate(exc, self._name, api_key, base_url, self._timeout_seconds)


def _translate(
    exc: BaseException, provider: str, api_key: str, base_url: str, timeout_seconds: float
) -> ProviderError:
    import httpx

    # Over aiohttp, the SDK's transport reports a refused or dropped connection as a
    # timeout; the aiohttp error underneath says which it was.
    failure = aiohttp_connection_failure(exc)
    if failure is not None:
        return unreachable(provider, base_url, redact(str(failure), api_key, base_url))
    if isinstance(exc, httpx.TimeoutException):
        return ProviderUnavailable(
            f"{provider} did not answer within {timeout_seconds:g}s", provider=provider
        )
    if isinstance(exc, httpx.HTTPError):
        # Refused, reset or dropped connections, and protocol errors mid-response.
        reason = redact(str(exc) or type(exc).__name__, api_key, base_url)
        return unreachable(provider, base_url, reason)
    status = getattr(exc, "status_code", None)
    body = getattr(exc, "body", None)
    headers = getattr(exc, "headers", None)
    if isinstance(status, int) and status >= 400:
        if status in _AUTH_STATUSES:
            return auth_refused(provider, f"HTTP {status}", status)
        return from_status(
            provider,
            status,
            detail=clean_detail(message_of(body), api_key),
            headers=headers if isinstance(headers, Mapping) else None,
            retryable_statuses=_RETRYABLE_STATUSES,
        )
    return ProviderInvalidResponse(
        f"{provider} returned an unusable response"
        + (f" (HTTP {status})" if isinstance(status, int) else ""),
        provider=provider,
    )


def _float_embeddings(response: Any) -> list[list[float]] | None:
    """The reply's float vectors, or None unless every one is a list of finite numbers."""
    embeddings = getattr(response, "embeddings", None)
    found = getattr(embeddings, "float_", None)
    if found is None:
        found = getattr(embeddings, "float", None)
    if not isinstance(found, list):
        return None
    vectors = [float_vector(values) for values in found]
    return None if any(vector is None for vector in vectors) else cast(list[list[float]], vectors)


def _chat_usage(usage: Any) -> tuple[int, int]:
    """Tokens the model saw and wrote (``usage.tokens``), else the billed ones."""
    for part in (getattr(usage, "tokens", None), getattr(usage, "billed_units", None)):
        seen = getattr(part, "input_tokens", None)
        written = getattr(part, "output_tokens", None)
        if seen is not None or written is not None:
            return token_count(seen), token_count(written)
    return 0, 0


def _embed_tokens(response: Any) -> int:
    billed = getattr(getattr(response, "meta", None), "billed_units", None)
    return token_count(getattr(billed, "input_tokens", None))
