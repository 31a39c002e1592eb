"""OpenAI, and any server that speaks its API, through the official SDK's async client.

The module is named ``openai_provider`` rather than ``openai`` so that no reader, tool
or ``sys.path`` accident can confuse it with the SDK package.

The SDK is imported on first use, never at module import: importing it costs a Lambda
cold start noticeable time, and the handlers that never call a model should not pay it.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from .base import ChatRequest, ChatResult, EmbedRequest, EmbedResult
from .common import (
    DEFAULT_TIMEOUT_SECONDS,
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
    ProviderQuotaExceeded,
    ProviderUnavailable,
)
from .transport import HttpxSdkAdapter, aiohttp_connection_failure

if TYPE_CHECKING:
    import httpx2
    from openai import APIStatusError, AsyncOpenAI

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_TIMEOUT_SECONDS", "OpenAIProvider"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIProvider(HttpxSdkAdapter["AsyncOpenAI"]):
    """Chat completions and embeddings against ``base_url`` (OpenAI's API by default).

    Credentials are resolved on every call, so a rotated secret takes effect without a
    cold start; clients are cached per (api key, base URL) and event loop, so warm calls
    reuse their connections, over aiohttp where it is installed (``transport.py``: one
    client carries hundreds of concurrent calls). The SDK's own retries are off: retrying
    is the state machine's job, and two layers of retries multiply into minutes of hidden
    waiting.
    """

    default_name: ClassVar[str] = "openai"
    default_base_url: ClassVar[str] = DEFAULT_BASE_URL

    async def complete(self, request: ChatRequest, /) -> ChatResult:
        client, api_key, base_url = await self._clients.get()
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
            body["max_completion_tokens" if _is_openai(base_url) else "max_tokens"] = (
                request.max_tokens
            )
        response_format = _response_format(request)
        if response_format is not None:
            body["response_format"] = response_format
        reply, latency_ms = await self._post(client, "/chat/completions", body, api_key, base_url)
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
        client, api_key, base_url = await self._clients.get()
        expected = 1 if isinstance(request.input, str) else len(request.input)
        # ``encoding_format`` asked for explicitly: the SDK may otherwise request base64,
        # which not every compatible server implements.
        body: dict[str, object] = {
            "model": request.model,
            "input": request.input,
            "encoding_format": "float",
        }
        reply, latency_ms = await self._post(client, "/embeddings", body, api_key, base_url)
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

    def _build_client(self, api_key: str, base_url: str) -> AsyncOpenAI:
        import openai

        return openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=self._timeout_seconds,
            http_client=self._http_client(openai, base_url),
            default_headers=self._default_headers(openai),
        )

    async def _close_client(self, client: AsyncOpenAI) -> None:
        await client.close()

    def _vendor_errors(self) -> tuple[type[BaseException], ...]:
        from openai import OpenAIError

        return (OpenAIError,)

    def _translate(self, exc: BaseException, api_key: str, base_url: str) -> ProviderError:
        return _translate(exc, self._name, api_key, base_url, self._timeout_seconds)

    async def _post(
        self, client: AsyncOpenAI, path: str, body: dict[str, object], api_key: str, base_url: str
    ) -> tuple[object, float]:
        """POST ``body`` to ``path`` through the SDK client; the reply's JSON as it came,
        and the call's latency in ms.

        The SDK's typed methods (``chat.completions.create``) cost twice the CPU of the
        call itself: they walk every parameter through the SDK's type-driven transform and
        build a typed model of every reply, recursively. The bodies built here are plain
        JSON already, and the few reply fields read are checked here, so the call goes
        through the client's ``post`` (the SDK's documented way to reach an endpoint): same
        client, connections, headers, timeout and error types.

        Within ``post``, what the SDK would redo on every call is done once or not at all,
        each through its documented arguments: the endpoint's URL is absolute (joined to
        the base URL once, as the SDK joins it; a relative path is parsed and merged with
        the base URL again on every call), the body goes as encoded JSON
        (``content``), and the reply comes back as the HTTP response (``cast_to`` the
        response class) whose JSON is read here, as the SDK's ``cast_to=object`` reads it.
        """
        url = self._endpoint(client, base_url, path)
        return await self._call(_post_json(client, url, body), api_key, base_url)

    def _endpoint(self, client: AsyncOpenAI, base_url: str, path: str) -> str:
        """``path`` joined to the client's base URL as the SDK joins a relative one, once
        per base URL (the join depends on nothing else: one table for every adapter)."""
        url = _ENDPOINTS.get((base_url, path))
        if url is None:
            if len(_ENDPOINTS) >= _MAX_ENDPOINTS:  # base URLs rotated many times over
                _ENDPOINTS.clear()
            base = client.base_url  # its path ends with "/", the SDK sees to that
            url = str(base.copy_with(raw_path=base.raw_path + path.lstrip("/").encode()))
            _ENDPOINTS[(base_url, path)] = url
        return url


_MAX_ENDPOINTS = 64
_ENDPOINTS: dict[tuple[str, str], str] = {}

_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
"""JSON bodies encoded as the SDK encodes them: UTF-8, compact, no NaN."""


@functools.cache
def _response_class() -> type[httpx2.Response]:
    """The response class of the HTTP package under the SDK's client (``httpx2`` in current
    releases, ``httpx`` in earlier ones): as ``cast_to``, the SDK hands back the response."""
    import importlib

    import openai

    for base in openai.DefaultAsyncHttpxClient.__mro__:
        if base.__name__ == "AsyncClient":
            package = importlib.import_module(base.__module__.partition(".")[0])
            return package.Response
    raise RuntimeError("the OpenAI SDK's HTTP client is not an httpx client")


async def _post_json(client: AsyncOpenAI, url: str, body: dict[str, object]) -> object:
    """POST ``body`` to ``url``; the reply's JSON, read as the SDK reads it for
    ``cast_to=object``: a body not declared JSON comes back as its text (an HTML page from a
    proxy); one declared JSON that is not raises ``ValueError`` (which ``_call`` reports as
    an invalid response)."""
    content = _JSON.encode(body).encode()
    response = await client.post(url, content=content, cast_to=_response_class())
    content_type = response.headers.get("content-type", "*").split(";", 1)[0]
    if not content_type.endswith("json"):
        return response.text
    return json.loads(response.content)


@functools.lru_cache(maxsize=64)
def _is_openai(base_url: str) -> bool:
    """OpenAI itself rejects ``max_tokens`` for reasoning models and wants
    ``max_completion_tokens``; many compatible servers only know ``max_tokens``."""
    return urlsplit(base_url).hostname == "api.openai.com"


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


def _translate(
    exc: BaseException, provider: str, api_key: str, base_url: str, timeout_seconds: float
) -> ProviderError:
    import openai

    failure = aiohttp_connection_failure(exc)
    if failure is not None and isinstance(exc, openai.APIConnectionError):
        return unreachable(provider, base_url, redact(str(failure), api_key, base_url))
    if isinstance(exc, openai.APITimeoutError):
        return ProviderUnavailable(
            f"{provider} did not answer within {timeout_seconds:g}s", provider=provider
        )
    if isinstance(exc, openai.APIConnectionError):
        reason = redact(str(exc.__cause__ or exc), api_key, base_url)
        return unreachable(provider, base_url, reason)
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
