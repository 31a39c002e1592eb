"""The provider calls of ``llm`` and ``embed`` steps, each one logged as an attempt."""

from __future__ import annotations

import time

from llm_orchestrator.providers import (
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    ProviderError,
    ProviderRegistry,
)
from llm_orchestrator.steps.usage import SUCCEEDED, Attempt, CallLog

__all__ = ["chat", "embed"]


async def chat(
    providers: ProviderRegistry, provider: str, request: ChatRequest, log: CallLog
) -> ChatResult:
    started = time.perf_counter()
    try:
        result = await providers.llm(provider).complete(request)
    except ProviderError as exc:
        log.add(_failed(provider, request.model, started, exc))
        raise
    log.add(
        Attempt(
            provider,
            request.model,
            SUCCEEDED,
            result.latency_ms,
            result.input_tokens,
            result.output_tokens,
        )
    )
    return result


async def embed(
    providers: ProviderRegistry, provider: str, request: EmbedRequest, log: CallLog
) -> EmbedResult:
    started = time.perf_counter()
    try:
        result = await providers.embedding(provider).embed(request)
    except ProviderError as exc:
        log.add(_failed(provider, request.model, started, exc))
        raise
    dimension = len(result.vectors[0]) if result.vectors else None
    log.add(
        Attempt(
            provider,
            request.model,
            SUCCEEDED,
            result.latency_ms,
            result.input_tokens,
            None,
            dimension,
        )
    )
    return result


def _failed(provider: str, model: str, started: float, exc: ProviderError) -> Attempt:
    return Attempt(provider, model, type(exc).__name__, (time.perf_counter() - started) * 1000.0)
