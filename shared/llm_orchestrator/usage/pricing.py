"""What a provider call costs: a dated table of list prices, per provider and model.

Prices are USD per million tokens, input and output, as the providers publish them for
their standard (non-batch, non-cached) API tiers. They change: ``PUT /admin/pricing``
overrides any entry, or adds a model this table does not know, without a release. A model
in neither costs ``None``: never a guess.

A model name matches its own entry, or the entry of the name without a date or ``-latest``
suffix (``gpt-4o-2024-08-06`` → ``gpt-4o``, ``claude-3-5-sonnet-latest`` →
``claude-3-5-sonnet``, ``command-r-plus-08-2024`` → ``command-r-plus`` when no dated entry
exists), so the dated snapshots the providers return price like their family.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "DEFAULT_PRICES",
    "PRICES_AS_OF",
    "ModelPrice",
    "PriceEntry",
    "PriceTable",
    "base_model",
    "call_cost",
    "effective_prices",
]

PRICES_AS_OF = "2025-11-24"
"""When the shipped list prices below were taken from the providers' public pricing pages."""


@dataclass(frozen=True, slots=True)
class ModelPrice:
    input_usd_per_million: float
    output_usd_per_million: float


def _p(input_usd: float, output_usd: float) -> ModelPrice:
    return ModelPrice(input_usd, output_usd)


_EMBEDDING = 0.0
"""Embedding models bill input tokens only."""

DEFAULT_PRICES: Mapping[tuple[str, str], ModelPrice] = MappingProxyType(
    {
        # OpenAI (platform.openai.com/docs/pricing, standard tier)
        ("openai", "gpt-4o"): _p(2.50, 10.00),
        ("openai", "gpt-4o-2024-05-13"): _p(5.00, 15.00),
        ("openai", "gpt-4o-mini"): _p(0.15, 0.60),
        ("openai", "gpt-4.1"): _p(2.00, 8.00),
        ("openai", "gpt-4.1-mini"): _p(0.40, 1.60),
        ("openai", "gpt-4.1-nano"): _p(0.10, 0.40),
        ("openai", "gpt-4-turbo"): _p(10.00, 30.00),
        ("openai", "gpt-4"): _p(30.00, 60.00),
        ("openai", "gpt-3.5-turbo"): _p(0.50, 1.50),
        ("openai", "o1"): _p(15.00, 60.00),
        ("openai", "o1-mini"): _p(1.10, 4.40),
        ("openai", "o3"): _p(2.00, 8.00),
        ("openai", "o3-mini"): _p(1.10, 4.40),
        ("openai", "o4-mini"): _p(1.10, 4.40),
        ("openai", "text-embedding-3-small"): _p(0.02, _EMBEDDING),
        ("openai", "text-embedding-3-large"): _p(0.13, _EMBEDDING),
        ("openai", "text-embedding-ada-002"): _p(0.10, _EMBEDDING),
        # Anthropic (anthropic.com/pricing, base input / output)
        ("anthropic", "claude-3-haiku"): _p(0.25, 1.25),
        ("anthropic", "claude-3-haiku-20240307"): _p(0.25, 1.25),
        ("anthropic", "claude-3-sonnet-20240229"): _p(3.00, 15.00),
        ("anthropic", "claude-3-opus"): _p(15.00, 75.00),
        ("anthropic", "claude-3-opus-20240229"): _p(15.00, 75.00),
        ("anthropic", "claude-3-5-haiku"): _p(0.80, 4.00),
        ("anthropic", "claude-3-5-haiku-20241022"): _p(0.80, 4.00),
        ("anthropic", "claude-3-5-sonnet"): _p(3.00, 15.00),
        ("anthropic", "claude-3-5-sonnet-20240620"): _p(3.00, 15.00),
        ("anthropic", "claude-3-5-sonnet-20241022"): _p(3.00, 15.00),
        ("anthropic", "claude-3-7-sonnet"): _p(3.00, 15.00),
        ("anthropic", "claude-3-7-sonnet-20250219"): _p(3.00, 15.00),
        ("anthropic", "claude-sonnet-4"): _p(3.00, 15.00),
        ("anthropic", "claude-sonnet-4-0"): _p(3.00, 15.00),
        ("anthropic", "claude-sonnet-4-20250514"): _p(3.00, 15.00),
        ("anthropic", "claude-sonnet-4-5"): _p(3.00, 15.00),
        ("anthropic", "claude-sonnet-4-5-20250929"): _p(3.00, 15.00),
        ("anthropic", "claude-opus-4"): _p(15.00, 75.00),
        ("anthropic", "claude-opus-4-0"): _p(15.00, 75.00),
        ("anthropic", "claude-opus-4-20250514"): _p(15.00, 75.00),
        ("anthropic", "claude-opus-4-1"): _p(15.00, 75.00),
        ("anthropic", "claude-opus-4-1-20250805"): _p(15.00, 75.00),
        ("anthropic", "claude-opus-4-5"): _p(5.00, 25.00),
        ("anthropic", "claude-opus-4-5-20251101"): _p(5.00, 25.00),
        ("anthropic", "claude-haiku-4-5"): _p(1.00, 5.00),
        ("anthropic", "claude-haiku-4-5-20251001"): _p(1.00, 5.00),
        # Cohere (cohere.com/pricing)
        ("cohere", "command-a-03-2025"): _p(2.50, 10.00),
        ("cohere", "command-a"): _p(2.50, 10.00),
        ("cohere", "command-r-plus"): _p(2.50, 10.00),
        ("cohere", "command-r-plus-08-2024"): _p(2.50, 10.00),
        ("cohere", "command-r-plus-04-2024"): _p(3.00, 15.00),
        ("cohere", "command-r"): _p(0.15, 0.60),
        ("cohere", "command-r-08-2024"): _p(0.15, 0.60),
        ("cohere", "command-r-03-2024"): _p(0.50, 1.50),
        ("cohere", "command-r7b-12-2024"): _p(0.0375, 0.15),
        ("cohere", "embed-english-v3.0"): _p(0.10, _EMBEDDING),
        ("cohere", "embed-multilingual-v3.0"): _p(0.10, _EMBEDDING),
        ("cohere", "embed-english-light-v3.0"): _p(0.10, _EMBEDDING),
        ("cohere", "embed-multilingual-light-v3.0"): _p(0.10, _EMBEDDING),
        ("cohere", "embed-v4.0"): _p(0.12, _EMBEDDING),
    }
)

_SNAPSHOT_SUFFIX = re.compile(r"-(?:latest|\d{8}|\d{4}-\d{2}-\d{2}|\d{2}-\d{4})$")


def base_model(model: str) -> str:
    """``model`` without a date or ``-latest`` suffix (itself when it has none)."""
    return _SNAPSHOT_SUFFIX.sub("", model)


def call_cost(
    price: ModelPrice | None, input_tokens: int | None, output_tokens: int | None
) -> float | None:
    """USD for one call at ``price``; None when the price is unknown."""
    if price is None:
        return None
    cost = (input_tokens or 0) * price.input_usd_per_million
    cost += (output_tokens or 0) * price.output_usd_per_million
    return round(cost / 1_000_000, 10)


class PriceTable:
    """The shipped prices with overrides on top (overrides win, entry by entry)."""

    def __init__(
        self,
        overrides: Mapping[tuple[str, str], ModelPrice] | None = None,
        *,
        defaults: Mapping[tuple[str, str], ModelPrice] = DEFAULT_PRICES,
    ) -> None:
        self._defaults = defaults
        self._overrides = dict(overrides or {})

    def price(self, provider: str, model: str) -> ModelPrice | None:
        for name in dict.fromkeys((model, base_model(model))):
            for table in (self._overrides, self._defaults):
                found = table.get((provider, name))
                if found is not None:
                    return found
        return None

    def default(self, provider: str, model: str) -> ModelPrice | None:
        """The shipped price alone (what the database's overrides fall back to)."""
        return PriceTable(defaults=self._defaults).price(provider, model)


@dataclass(frozen=True, slots=True)
class PriceEntry:
    """One row of the effective table, as ``GET /admin/pricing`` lists it."""

    provider: str
    model: str
    price: ModelPrice
    source: str
    """``default`` (shipped, as of ``PRICES_AS_OF``) or ``override`` (``PUT /admin/pricing``)."""


def effective_prices(
    overrides: Mapping[tuple[str, str], ModelPrice],
) -> list[PriceEntry]:
    """Shipped prices with the overrides in their place, plus overrides of other models."""
    merged = {key: PriceEntry(*key, price, "default") for key, price in DEFAULT_PRICES.items()}
    merged.update({key: PriceEntry(*key, price, "override") for key, price in overrides.items()})
    return [merged[key] for key in sorted(merged)]
