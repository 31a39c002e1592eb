"""The configured default budget (``LLMO_DEFAULT_MONTHLY_BUDGET_USD``) is enforced where an
admin's is: before each provider call of a running execution, not only at execute. A step's
begin carries the budget's setting only; the spend is read right before the call."""

from __future__ import annotations

import httpx
import pytest

from llm_orchestrator.config import Settings
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import CreateUser, Session
from tests.integration.llm_support import (
    _fresh_fakes,
    anthropic_fake,
    cohere_fake,
    openai_fake,
    server,
)
from tests.integration.test_budgets import crosses_its_budget_at_the_third_step, priced

__all__ = ["_fresh_fakes", "anthropic_fake", "cohere_fake", "openai_fake", "server"]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"default_monthly_budget_usd": 0.015})


async def test_the_default_budget_stops_a_running_execution_after_the_step_that_crossed_it(
    client: httpx.AsyncClient, admin: Session, create_user: CreateUser, openai_fake: FakeOpenAI
) -> None:
    await priced(client, admin)
    dev = await create_user("dev")  # no budget of their own: the default applies
    await crosses_its_budget_at_the_third_step(client, admin, dev, openai_fake)
