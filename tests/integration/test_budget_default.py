"""The configured default budget (``LLMO_DEFAULT_MONTHLY_BUDGET_USD``) is enforced where an
admin's is: before each provider call of a running execution, not only at execute. A step's
begin carries the budget's setting only; the spend is read right before the call."""

from __future__ import annotations

import httpx
import pytest

from llm_orchestrator.config import Settings
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import CreateUser, Session
from tests.integration.execution_support import create_workflow, wait_for
from tests.integration.llm_support import (
    _fresh_fakes,
    anthropic_fake,
    cohere_fake,
    openai_fake,
    server,
)
from tests.integration.test_budgets import (
    assert_refused_for_budget,
    execute,
    priced,
    step,
)

__all__ = ["_fresh_fakes", "anthropic_fake", "cohere_fake", "openai_fake", "server"]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"default_monthly_budget_usd": 0.015})


async def test_the_default_budget_stops_a_running_execution_after_the_step_that_crossed_it(
    client: httpx.AsyncClient, admin: Session, create_user: CreateUser, openai_fake: FakeOpenAI
) -> None:
    await priced(client, admin)
    dev = await create_user("dev")  # no budget of their own: the default applies
    chain = [step("a"), step("b", depends_on=["a"]), step("c", depends_on=["b"])]
    workflow_id = await create_workflow(client, dev, chain)

    started = await execute(client, dev, workflow_id)
    final = await wait_for(client, dev, workflow_id, started.json()["execution_id"])

    assert final["status"] == "failed"
    assert final["error"]["type"] == "BudgetExhausted"
    assert [final["steps"][s]["status"] for s in "abc"] == ["completed", "completed", "failed"]
    assert len(openai_fake.requests_to("/v1/chat/completions")) == 2
    assert_refused_for_budget(await execute(client, dev, workflow_id), 0.015, 0.02)
