"""The provider calls of ``llm`` and ``embed`` steps, each one logged as an attempt, and
their fallback chains.

A step's ``fallback`` entries are tried in order, inside the step's **last** attempt (the
one its ``retry`` policy allows last) and only after the call before them ended with a
retryable error (rate limited, unavailable, timed out): earlier attempts fail as they
always did and the state machine's Retry calls the primary again. A permanent error (a
refused credential, a rejected request) ends the chain at once. Walking the chain in one
step-runner invocation keeps both engines and the compiled state machine unchanged.

An ``llm`` step with a schema (``output_schema``, or several output names) asks every
provider of its chain for JSON through that provider's own mechanism, and corrects a reply
that misses the schema once, inside the same call of the chain (``llm_reply``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from llm_orchestrator.providers import (
    ChatRequest,
    ChatResult,
    ChatTurn,
    EmbedRequest,
    EmbedResult,
    ProviderError,
    ProviderRegistry,
    StructuredOutput,
    StructuredOutputInvalid,
)
from llm_orchestrator.steps.errors import StepConfigurationError
from llm_orchestrator.steps.outputs import structured_outputs, text_outputs
from llm_orchestrator.steps.structured import check_reply, correction
from llm_orchestrator.usage.ledger import SUCCEEDED, Attempt, CallLog
from llm_orchestrator.workflows.models import EmbedStep, LlmStep
from llm_orchestrator.workflows.output_schemas import effective_schema, strict_compatible

__all__ = [
    "DimensionOf",
    "LlmReply",
    "Target",
    "chat",
    "chat_chain",
    "embed",
    "embed_chain",
    "llm_reply",
]

_Result = TypeVar("_Result")

DimensionOf = Callable[[str, str], Awaitable[int | None]]
"""``(provider, model)`` → the vector size that model produces, when known."""


@dataclass(frozen=True, slots=True)
class Target:
    provider: str
    model: str
    temperature: float | None = None
    max_tokens: int | None = None


def llm_targets(step: LlmStep) -> list[Target]:
    primary = Target(step.provider, step.model, step.temperature, step.max_tokens)
    return [primary] + [
        Target(
            entry.provider,
            entry.model,
            step.temperature if entry.temperature is None else entry.temperature,
            step.max_tokens if entry.max_tokens is None else entry.max_tokens,
        )
        for entry in step.fallback or []
    ]


def embed_targets(step: EmbedStep) -> list[Target]:
    return [Target(step.provider, step.model)] + [
        Target(entry.provider, entry.model) for entry in step.fallback or []
    ]


async def _walk(
    targets: Sequence[Target], call: Callable[[Target, bool], Awaitable[_Result]]
) -> _Result:
    """``call`` on each target in turn until one answers; ``call`` learns whether a target
    before it has failed (it is then a fallback). A permanent error, or the last target's
    error, ends the walk: alone as it was when only the primary was tried, else one error
    naming every provider tried."""
    failures: list[tuple[Target, ProviderError]] = []
    for target in targets:
        try:
            return await call(target, bool(failures))
        except ProviderError as exc:
            failures.append((target, exc))
            if not exc.retryable or len(failures) == len(targets):
                if len(failures) == 1:
                    raise
                raise _chain_error(failures) from exc
    raise AssertionError("a chain has at least its primary")


async def chat_chain(
    providers: ProviderRegistry,
    step: LlmStep,
    request: ChatRequest,
    log: CallLog,
    *,
    last_attempt: bool,
) -> ChatResult:
    """The step's primary, then (on its last attempt) each fallback in turn."""
    targets = llm_targets(step) if last_attempt else llm_targets(step)[:1]

    async def call(target: Target, _fallback: bool) -> ChatResult:
        return await chat(providers, target.provider, _aimed(request, target), log)

    return await _walk(targets, call)


@dataclass(frozen=True, slots=True)
class LlmReply:
    """What an ``llm`` step produced: its outputs, and the tokens and time of the calls
    that produced them (a corrective retry included)."""

    outputs: dict[str, Any]
    input_tokens: int
    output_tokens: int
    latency_ms: float


async def llm_reply(
    providers: ProviderRegistry,
    step: LlmStep,
    request: ChatRequest,
    log: CallLog,
    *,
    last_attempt: bool,
) -> LlmReply:
    """The step's outputs from its fallback chain: plain text, or, for a step with a schema
    (its ``output_schema``, or several output names), a JSON object asked for through each
    provider's native mechanism and checked against the schema.

    A reply that does not parse or match is answered once, by the same provider, with the
    reply and what is wrong with it; a second miss fails the step with
    ``StructuredOutputInvalid`` (permanent: a fallback is for providers that are down, not
    for models that answer). Each call is an attempt in the step's usage.
    """
    schema = effective_schema(step.output_schema, step.output)
    if schema is None:
        chat_result = await chat_chain(providers, step, request, log, last_attempt=last_attempt)
        return LlmReply(
            text_outputs(step.output, chat_result.text),
            chat_result.input_tokens,
            chat_result.output_tokens,
            chat_result.latency_ms,
        )
    asked = replace(
        request, output=StructuredOutput(step.id, schema, strict=strict_compatible(schema))
    )
    targets = llm_targets(step) if last_attempt else llm_targets(step)[:1]

    async def call(target: Target, _fallback: bool) -> LlmReply:
        value, results = await _structured(
            providers, step, target.provider, _aimed(asked, target), schema, log
        )
        return LlmReply(
            structured_outputs(step.output, value, own_schema=step.output_schema is not None),
            sum(result.input_tokens for result in results),
            sum(result.output_tokens for result in results),
            sum(result.latency_ms for result in results),
        )

    return await _walk(targets, call)


async def _structured(
    providers: ProviderRegistry,
    step: LlmStep,
    provider: str,
    request: ChatRequest,
    schema: Mapping[str, Any],
    log: CallLog,
) -> tuple[Any, list[ChatResult]]:
    """The value of a reply matching ``schema``, and the calls it took (one or two)."""
    first = await chat(providers, provider, request, log)
    value, mismatch = check_reply(schema, first)
    if mismatch is None:
        return value, [first]
    _mark_invalid(log)
    retry = replace(
        request,
        follow_up=(
            *request.follow_up,
            # Never empty: Anthropic refuses an assistant turn without content.
            ChatTurn("assistant", first.text or first.refusal or "(no answer)"),
            ChatTurn("user", correction(mismatch)),
        ),
    )
    second = await chat(providers, provider, retry, log)
    value, mismatch = check_reply(schema, second)
    if mismatch is None:
        return value, [first, second]
    _mark_invalid(log)
    raise StructuredOutputInvalid(
        f"step '{step.id}': {provider} {request.model!r} answered twice with JSON that does "
        f"not match the step's output schema (the second time after being told why); "
        f"{mismatch.describe()}",
        provider=provider,
    )


def _mark_invalid(log: CallLog) -> None:
    """The call answered, but not with what the schema asks for: its attempt says so (its
    tokens are spent and priced all the same)."""
    last = log.attempts[-1]
    log.attempts[-1] = replace(last, outcome=StructuredOutputInvalid.__name__)


def _aimed(request: ChatRequest, target: Target) -> ChatRequest:
    """``request`` for one target of the chain: its model and its settings."""
    return replace(
        request, model=target.model, temperature=target.temperature, max_tokens=target.max_tokens
    )


async def embed_chain(
    providers: ProviderRegistry,
    step: EmbedStep,
    request: EmbedRequest,
    log: CallLog,
    *,
    last_attempt: bool,
    dimension_of: DimensionOf,
) -> EmbedResult:
    """``chat_chain`` for embeddings; a fallback's vectors must have the primary's size."""
    targets = embed_targets(step) if last_attempt else embed_targets(step)[:1]

    async def call(target: Target, fallback: bool) -> EmbedResult:
        # Only Cohere has input types; other providers are never sent one.
        input_type = request.input_type if target.provider == "cohere" else None
        asked = replace(request, model=target.model, input_type=input_type)
        result = await embed(providers, target.provider, asked, log)
        if fallback:
            await _check_size(targets[0], target, result, dimension_of)
        return result

    return await _walk(targets, call)


async def _check_size(
    primary: Target, fallback: Target, result: EmbedResult, dimension_of: DimensionOf
) -> None:
    size = len(result.vectors[0]) if result.vectors else None
    expected = await dimension_of(primary.provider, primary.model)
    if size is None or size == expected:
        return
    if expected is None:
        raise StepConfigurationError(
            f"fallback {fallback.provider} {fallback.model!r} answered with {size}-dimension "
            f"vectors, but the size of {primary.provider} {primary.model!r} is unknown (it has "
            "never answered here), so they cannot be shown to match: the vectors are refused"
        )
    raise StepConfigurationError(
        f"fallback {fallback.provider} {fallback.model!r} answered with {size}-dimension "
        f"vectors but {primary.provider} {primary.model!r} produces {expected}: the vectors "
        "are refused (an index holds one size)"
    )


def _chain_error(failures: Sequence[tuple[Target, ProviderError]]) -> ProviderError:
    """The last error, its message naming every provider tried, so the step's error says
    why each one failed (the class, and so retry routing, is the last one's)."""
    _, last = failures[-1]
    tried = "; ".join(
        f"{target.provider} {target.model!r}: {error.message}" for target, error in failures
    )
    return type(last)(
        f"the fallback chain failed: {tried}",
        provider=last.provider,
        status_code=last.status_code,
        retry_after=last.retry_after,
    )


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
