"""Every provider call a step makes, priced and recorded.

A step's calls (the first attempt, the state machine's retries, fallbacks) each land in
the ``provider_calls`` ledger with their tokens and cost, in the step run's own list (what
``steps.<id>.usage`` shows), and in the owner's monthly spend, in one statement. The step
runner writes that statement in the transaction that completes the step (or records its
error), with prices read when the step began: no round trip of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol

from llm_orchestrator.store.usage import CallRow, PriceRow, float_or_none
from llm_orchestrator.usage.pricing import ModelPrice, PriceTable, base_model, call_cost

__all__ = [
    "SUCCEEDED",
    "Attempt",
    "CallLog",
    "UsageRecorder",
    "UsageStore",
    "price_keys",
    "step_usage",
    "float_or_none",
    "int_or_none",
]

SUCCEEDED = "succeeded"
"""The outcome of a call that answered; a failed call's outcome is its error's name."""


class UsageStore(Protocol):
    """``UsageRepository`` in production."""

    async def price_overrides(
        self, keys: Sequence[tuple[str, str]] | None = None
    ) -> list[PriceRow]: ...

    async def record_calls(
        self, execution_id: str, step_id: str, calls: Sequence[CallRow], *, month: date
    ) -> None: ...

    async def known_dimension(self, provider: str, model: str) -> int | None: ...


@dataclass(frozen=True, slots=True)
class Attempt:
    provider: str
    model: str
    outcome: str
    latency_ms: float
    input_tokens: int | None = None
    output_tokens: int | None = None
    dimension: int | None = None

    @property
    def succeeded(self) -> bool:
        return self.outcome == SUCCEEDED


@dataclass(slots=True)
class CallLog:
    """The calls one step-runner invocation made, in order."""

    attempts: list[Attempt] = field(default_factory=list)

    def add(self, attempt: Attempt) -> None:
        self.attempts.append(attempt)


class UsageRecorder:
    def __init__(self, store: UsageStore, *, clock: Callable[[], datetime]) -> None:
        self._store = store
        self._now = clock

    async def known_dimension(self, provider: str, model: str) -> int | None:
        """The vector size ``model`` answered with in any earlier recorded call."""
        return await self._store.known_dimension(provider, model)

    async def prices(self, attempts: Sequence[Attempt]) -> PriceTable:
        """The price table for these calls: the shipped prices under the overrides."""
        keys = price_keys((a.provider, a.model) for a in attempts)
        return price_table(await self._store.price_overrides(keys))

    def month(self) -> date:
        """The month (its first day, UTC) whose spend a call made now counts in."""
        return self._now().astimezone(UTC).date().replace(day=1)

    async def record(self, execution_id: str, step_id: str, log: CallLog) -> None:
        """Price and record ``log``'s calls on their own (reading the prices first)."""
        if not log.attempts:
            return
        rows = self.rows(log, await self.prices(log.attempts))
        await self._store.record_calls(execution_id, step_id, rows, month=self.month())

    def rows(self, log: CallLog, table: PriceTable) -> list[CallRow]:
        """``log``'s calls priced with ``table``, as the ledger records them."""
        return [
            CallRow(
                provider=a.provider,
                model=a.model,
                outcome=a.outcome,
                latency_ms=round(a.latency_ms, 3),
                input_tokens=a.input_tokens,
                output_tokens=a.output_tokens,
                cost_usd=call_cost(
                    table.price(a.provider, a.model), a.input_tokens, a.output_tokens
                ),
                dimension=a.dimension,
            )
            for a in log.attempts
        ]


def price_keys(targets: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The ``(provider, model)`` overrides that can price calls to ``targets``: each model
    and its base model (without a snapshot suffix)."""
    return list(
        dict.fromkeys(
            (provider, name) for provider, model in targets for name in (model, base_model(model))
        )
    )


def price_table(overrides: Iterable[PriceRow]) -> PriceTable:
    """The shipped prices under ``overrides``."""
    return PriceTable(
        {
            (row.provider, row.model): ModelPrice(
                row.input_usd_per_million, row.output_usd_per_million
            )
            for row in overrides
        }
    )


def step_usage(calls: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``{input_tokens, output_tokens, cost_usd, attempts}`` of a step run's recorded calls.

    ``cost_usd`` is None when a call that used tokens has no known price (never a guess);
    calls that used none (a refused request, an outage) cost nothing whatever their price.
    Numbers come out as the response model types them (``1`` in a float field as ``1.0``),
    so the status read can write this as it is.
    """
    attempts = [
        {
            "provider": call.get("provider"),
            "model": call.get("model"),
            "outcome": call.get("outcome"),
            "latency_ms": float_or_none(call.get("latency_ms")),
            "input_tokens": int_or_none(call.get("input_tokens")),
            "output_tokens": int_or_none(call.get("output_tokens")),
            "cost_usd": float_or_none(call.get("cost_usd")),
        }
        for call in calls
    ]
    return {
        "input_tokens": sum(a["input_tokens"] or 0 for a in attempts),
        "output_tokens": sum(a["output_tokens"] or 0 for a in attempts),
        "cost_usd": total_cost(attempts),
        "attempts": attempts,
    }


def int_or_none(value: Any) -> int | None:
    return value if value is None or type(value) is int else int(value)


def total_cost(parts: Sequence[dict[str, Any]]) -> float | None:
    """The sum of ``cost_usd`` over ``parts``; None if a part with tokens has none."""
    total = 0.0
    for part in parts:
        cost = part.get("cost_usd")
        if cost is None:
            if (part.get("input_tokens") or 0) or (part.get("output_tokens") or 0):
                return None
            continue
        total += float(cost)
    return round(total, 10)
