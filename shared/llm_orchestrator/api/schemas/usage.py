"""Request and response bodies of ``/admin/pricing`` (and, with budgets, their routes)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from llm_orchestrator.api.schemas.common import StrictModel
from llm_orchestrator.usage.budgets import BudgetStatus
from llm_orchestrator.usage.pricing import PRICES_AS_OF, PriceEntry

MAX_PRICE_USD_PER_MILLION = 100_000.0
"""A sanity bound: no model costs $100 per thousand tokens, a typo might."""
MAX_PRICE_OVERRIDES = 2_000

ProviderName = Literal["openai", "anthropic", "cohere"]


class PriceIn(StrictModel):
    provider: ProviderName
    model: str = Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")
    input_usd_per_million: float = Field(
        strict=True,
        ge=0,
        le=MAX_PRICE_USD_PER_MILLION,
        allow_inf_nan=False,
        description="USD per 1M input",
    )
    output_usd_per_million: float = Field(
        strict=True,
        ge=0,
        le=MAX_PRICE_USD_PER_MILLION,
        allow_inf_nan=False,
        description="USD per 1M output",
    )


class PricingUpdate(StrictModel):
    prices: list[PriceIn] = Field(
        max_length=MAX_PRICE_OVERRIDES,
        description="The whole set of overrides: entries left out go back to the shipped price",
    )


class PricePublic(BaseModel):
    provider: str
    model: str
    input_usd_per_million: float
    output_usd_per_million: float
    source: Literal["default", "override"] = Field(
        description="default: shipped with this release, as of defaults_as_of; "
        "override: set through PUT /admin/pricing"
    )
    updated_at: datetime | None = Field(None, description="When an override was set")


class PricingPublic(BaseModel):
    currency: Literal["USD"] = "USD"
    unit: Literal["per million tokens"] = "per million tokens"
    defaults_as_of: str = Field(
        PRICES_AS_OF, description="When the shipped prices were taken from the providers"
    )
    prices: list[PricePublic] = Field(
        description="Every priced model; a model not listed costs null, never a guess"
    )

    @classmethod
    def of(
        cls, entries: list[PriceEntry], updated: dict[tuple[str, str], datetime | None]
    ) -> PricingPublic:
        return cls(
            prices=[
                PricePublic(
                    provider=e.provider,
                    model=e.model,
                    input_usd_per_million=e.price.input_usd_per_million,
                    output_usd_per_million=e.price.output_usd_per_million,
                    source="override" if e.source == "override" else "default",
                    updated_at=updated.get((e.provider, e.model)),
                )
                for e in entries
            ]
        )


MAX_MONTHLY_BUDGET_USD = 10_000_000.0


class BudgetUpdate(StrictModel):
    monthly_usd: float | None = Field(
        strict=True,
        ge=0,
        le=MAX_MONTHLY_BUDGET_USD,
        allow_inf_nan=False,
        description="USD per calendar month (UTC); null for no budget",
    )


class BudgetPublic(BaseModel):
    monthly_usd: float | None = Field(description="null: no budget")
    spent_usd: float = Field(description="Spent this month (UTC), calls with a known price")
    resets_at: datetime = Field(description="00:00 UTC on the first of next month")

    @classmethod
    def of(cls, status: BudgetStatus) -> BudgetPublic:
        return cls(
            monthly_usd=status.monthly_usd, spent_usd=status.spent_usd, resets_at=status.resets_at
        )
