"""Anthropic's Messages API through the official SDK's async client.

Chat only: Anthropic offers no embeddings, so this adapter is an ``LLMProvider`` and not
an ``EmbeddingProvider`` (validation refuses ``embed`` steps naming it at create time).
The SDK is imported on first use, never at module import.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from .base import ChatRequest, ChatResult
from .common import (
    clean_detail,
    from_status,
    redact,
    token_count,
    unreachable,
)
from .errors import (
    ProviderError,
    ProviderInvalidResponse,
    ProviderUnavailable,
)
from .transport import HttpxSdkAdapter, aiohttp_connection_failure

if TYPE_CHECKING:
    from anthropic import AsyncAnthropic

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_MAX_TOKENS", "AnthropicProvider"]

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_MAX_TOKENS = 4096
"""``max_tokens`` sent when a step sets none: the Messages API requires one, and 4,096 is
within every Claude model's output limit (older models stop there, newer ones go higher
when a step asks)."""
TOOL_DESCRIPTION = "Give your answer as this tool's input: a JSON object matching its schema."
"""The forced tool of a structured-output step; its name is the schema's name."""


class AnthropicProvider(HttpxSdkAdapter["AsyncAnthropic"]):
    """Chat completions against ``base_url`` (Anthropic's API by default), one client per
    credential set and event loop, reused, the SDK's own retries off, over aiohttp where
    it is installed (``transport.py``)."""

    default_name: ClassVar[str] = "anthropic"
    default_base_url: ClassVar[str] = DEFAULT_BASE_URL

    async def complete(self, request: ChatRequest, /) -> ChatResult:
        client, api_key, base_url = await self._clients.get()
        options: dict[str, Any] = {}
        if request.system is not None:
            options["system"] = request.system
        if request.temperature is not None:
            # Through ``extra_body``: recent SDKs dropped the keyword (newer models take no
            # sampling parameters), but the API still reads it where the model does. Where
            # it does not, the 400 fails the step with Anthropic's own message.
            options["extra_body"] = {"temperature": request.temperature}
        if request.output is not None:
            # Structured output the Messages API way: one tool whose input schema is the
            # step's schema, and ``tool_choice`` forcing the model to call it; the call's
            # ``input`` is the answer.
            options["tools"] = [
                {
                    "name": request.output.name,
                    "description": TOOL_DESCRIPTION,
                    "input_schema": dict(request.output.schema),
                }
            ]
            options["tool_choice"] = {"type": "tool", "name": request.output.name}
        messages: list[Any] = [{"role": "user", "content": request.prompt}]
        messages.extend({"role": turn.role, "content": turn.content} for turn in request.follow_up)
        response, latency_ms = await self._call(
            client.messages.create(
                model=request.model,
                max_tokens=request.max_tokens or DEFAULT_MAX_TOKENS,
                messages=messages,
                **options,
            ),
            api_key,
            base_url,
        )
        return _chat_result(response, request, latency_ms, self._name)

    def _build_client(self, api_key: str, base_url: str) -> AsyncAnthropic:
        import anthropic

        return anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url,
            max_retries=0,
            timeout=self._timeout_seconds,
            http_client=self._http_client(anthropic, base_url),
            default_headers=self._default_headers(anthropic),
        )

    async def _close_client(self, client: AsyncAnthropic) -> None:
        await client.close()

    def _vendor_errors(self) -> tuple[type[BaseException], ...]:
        from anthropic import AnthropicError

        return (AnthropicError,)

    def _translate(self, exc: BaseException, api_key: str, base_url: str) -> ProviderError:
        return _translate(exc, self._name, api_key, base_url, self._timeout_seconds)


def _chat_result(
    response: Any, request: ChatRequest, latency_ms: float, provider: str
) -> ChatResult:
    """The reply's text blocks and usage; anything not shaped like a Message is refused."""
    from anthropic.types import Message

    # A body that is JSON but not an object, or not JSON (an HTML page from a proxy),
    # reaches us as a plain list or string rather than a Message.
    blocks = response.content if isinstance(response, Message) else None
    if not isinstance(blocks, list):
        raise ProviderInvalidResponse(
            f"{provider} returned a reply without a content list", provider=provider
        )
    # Text blocks, and the forced tool's call when a schema was asked for (a plain prompt
    # gets no tool use or thinking blocks back).
    texts: list[str] = []
    structured: Any = None
    tool = request.output.name if request.output is not None else None
    for block in blocks:
        kind = getattr(block, "type", None)
        text = getattr(block, "text", None)
        if kind == "text" and isinstance(text, str):
            texts.append(text)
        elif kind == "tool_use" and tool is not None and getattr(block, "name", None) == tool:
            structured = getattr(block, "input", None)
    usage = response.usage
    model = response.model if isinstance(response.model, str) and response.model else None
    return ChatResult(
        text=json.dumps(structured) if structured is not None else "".join(texts),
        input_tokens=token_count(getattr(usage, "input_tokens", None)),
        output_tokens=token_count(getattr(usage, "output_tokens", None)),
        model=model or request.model,
        latency_ms=latency_ms,
        structured=structured,
        cut_off=getattr(response, "stop_reason", None) == "max_tokens",
    )


def _translate(
    exc: BaseException, provider: str, api_key: str, base_url: str, timeout_seconds: float
) -> ProviderError:
    import anthropic

    failure = aiohttp_connection_failure(exc)
    if failure is not None and isinstance(exc, anthropic.APIConnectionError):
        return unreachable(provider, base_url, redact(str(failure), api_key, base_url))
    if isinstance(exc, anthropic.APITimeoutError):
        return ProviderUnavailable(
            f"{provider} did not answer within {timeout_seconds:g}s", provider=provider
        )
    if isinstance(exc, anthropic.APIConnectionError):
        reason = redact(str(exc.__cause__ or exc), api_key, base_url)
        return unreachable(provider, base_url, reason)
    if isinstance(exc, anthropic.APIStatusError):
        error_type, message = _error_of(exc.body)
        # 529 ``overloaded_error`` is a 5xx, so it reads as unavailable and is retried.
        return from_status(
            provider,
            exc.status_code,
            detail=clean_detail(message, api_key),
            headers=exc.response.headers,
            code=error_type,
        )
    return ProviderInvalidResponse(
        f"{provider} returned an unusable response: {clean_detail(str(exc), api_key, base_url)}",
        provider=provider,
    )


def _error_of(body: object) -> tuple[str | None, str | None]:
    """``(error.type, error.message)`` of Anthropic's ``{"type": "error", "error": {...}}``."""
    if isinstance(body, Mapping):
        inner = body.get("error")
        if isinstance(inner, Mapping):
            body = inner
        kind, message = body.get("type"), body.get("message")
        return (
            kind if isinstance(kind, str) and kind != "error" else None,
            message if isinstance(message, str) else None,
        )
    if isinstance(body, str):
        return None, body
    return None, None
