"""Cost accounting through the API: every provider call priced from the dated table, the
overrides of ``PUT /admin/pricing``, ``usage`` in the execution status, ``/metrics`` and
``/admin/stats``."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from llm_orchestrator.usage.pricing import DEFAULT_PRICES, PRICES_AS_OF
from tests.fakes.embeddings import count_tokens
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import CreateUser, Session
from tests.integration.execution_support import (
    create_workflow,
    start_execution,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("fake_openai")
"""Every test here runs on the fake OpenAI server (conftest's ``server`` points at it)."""


FAST_RETRY = {"max_attempts": 3, "backoff_seconds": 1, "backoff_rate": 1.0}


def step(step_id: str, model: str, prompt: str, output: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "llm",
        "provider": "openai",
        "model": model,
        "prompt": prompt,
        "output": [output],
        "retry": FAST_RETRY,
        **extra,
    }


async def run(
    client: httpx.AsyncClient, session: Session, steps: list[dict[str, Any]], inputs: dict[str, Any]
) -> dict[str, Any]:
    workflow_id = await create_workflow(client, session, steps)
    execution_id = await start_execution(client, session, workflow_id, inputs)
    return await wait_for(client, session, workflow_id, execution_id)


def list_price(model: str) -> tuple[float, float]:
    price = DEFAULT_PRICES[("openai", model)]
    return price.input_usd_per_million, price.output_usd_per_million


def expected_cost(input_tokens: int, output_tokens: int, prices: tuple[float, float]) -> float:
    return (input_tokens * prices[0] + output_tokens * prices[1]) / 1_000_000


async def test_each_step_costs_its_tokens_at_the_list_price(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI
) -> None:
    steps = [
        step("summary", "gpt-4o-mini", "Summarise: {{text}}", "summary"),
        step("verdict", "gpt-4o", "Judge: {{summary}}", "verdict", depends_on=["summary"]),
        {
            "id": "vector",
            "type": "embed",
            "provider": "openai",
            "model": "text-embedding-3-small",
            "input": "{{text}}",
            "output": ["embedding"],
        },
    ]

    final = await run(client, admin, steps, {"text": "one two three"})

    assert final["status"] == "completed", final
    summary = final["steps"]["summary"]["usage"]
    prompt_tokens = count_tokens("Summarise: one two three")
    reply_tokens = count_tokens("echo: Summarise: one two three")
    assert (summary["input_tokens"], summary["output_tokens"]) == (prompt_tokens, reply_tokens)
    assert summary["cost_usd"] == pytest.approx(
        expected_cost(prompt_tokens, reply_tokens, list_price("gpt-4o-mini"))
    )
    [attempt] = summary["attempts"]
    assert attempt["provider"] == "openai" and attempt["model"] == "gpt-4o-mini"
    assert attempt["outcome"] == "succeeded" and attempt["latency_ms"] >= 0
    assert attempt["cost_usd"] == summary["cost_usd"]
    verdict = final["steps"]["verdict"]["usage"]
    assert verdict["cost_usd"] == pytest.approx(
        expected_cost(verdict["input_tokens"], verdict["output_tokens"], list_price("gpt-4o"))
    )
    embedding = final["steps"]["vector"]["usage"]
    assert embedding["input_tokens"] == count_tokens("one two three")
    assert embedding["output_tokens"] == 0
    assert embedding["cost_usd"] == pytest.approx(
        expected_cost(3, 0, list_price("text-embedding-3-small"))
    )
    steps_usage = [final["steps"][s]["usage"] for s in ("summary", "verdict", "vector")]
    assert final["usage"]["input_tokens"] == sum(u["input_tokens"] for u in steps_usage)
    assert final["usage"]["output_tokens"] == sum(u["output_tokens"] for u in steps_usage)
    assert final["usage"]["cost_usd"] == pytest.approx(sum(u["cost_usd"] for u in steps_usage))


async def test_a_retried_call_is_an_attempt_of_its_own(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI
) -> None:
    fake_openai.fail_next(503)

    final = await run(client, admin, [step("a", "gpt-4o-mini", "Hi {{x}}", "out")], {"x": "y"})

    assert final["status"] == "completed", final
    failed, succeeded = final["steps"]["a"]["usage"]["attempts"]
    assert failed["outcome"] == "ProviderUnavailable"
    assert (failed["input_tokens"], failed["output_tokens"], failed["cost_usd"]) == (None, None, 0)
    assert succeeded["outcome"] == "succeeded"
    assert final["steps"]["a"]["usage"]["cost_usd"] == succeeded["cost_usd"] > 0


async def test_a_model_without_a_price_costs_null_not_a_guess(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI
) -> None:
    final = await run(client, admin, [step("a", "my-fine-tune", "Hi {{x}}", "out")], {"x": "y"})

    assert final["status"] == "completed", final
    usage = final["steps"]["a"]["usage"]
    assert usage["input_tokens"] > 0 and usage["cost_usd"] is None
    assert usage["attempts"][0]["cost_usd"] is None
    assert final["usage"]["cost_usd"] is None


async def test_dated_snapshots_price_like_their_family(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI
) -> None:
    final = await run(
        client, admin, [step("a", "gpt-4o-mini-2024-07-18", "Hi {{x}}", "out")], {"x": "y"}
    )

    usage = final["steps"]["a"]["usage"]
    assert usage["cost_usd"] == pytest.approx(
        expected_cost(usage["input_tokens"], usage["output_tokens"], list_price("gpt-4o-mini"))
    )


async def test_price_overrides_cost_the_next_calls_and_can_be_withdrawn(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI
) -> None:
    table = await client.get("/admin/pricing", headers=admin.headers)
    assert table.status_code == 200
    assert table.json()["defaults_as_of"] == PRICES_AS_OF
    shipped = {(p["provider"], p["model"]): p for p in table.json()["prices"]}
    assert shipped[("openai", "gpt-4o")]["source"] == "default"
    for model in ("gpt-4o", "gpt-4o-mini", "text-embedding-3-small", "text-embedding-3-large"):
        assert ("openai", model) in shipped
    for model in ("claude-3-haiku", "claude-3-5-sonnet", "claude-sonnet-4", "claude-opus-4"):
        assert ("anthropic", model) in shipped
    for model in ("command-r", "command-r-plus", "command-a", "embed-english-v3.0", "embed-v4.0"):
        assert ("cohere", model) in shipped

    overrides = {
        "prices": [
            {
                "provider": "openai",
                "model": "gpt-4o-mini",
                "input_usd_per_million": 1000,
                "output_usd_per_million": 2000,
            },
            {
                "provider": "openai",
                "model": "my-fine-tune",
                "input_usd_per_million": 7.5,
                "output_usd_per_million": 0,
            },
        ]
    }
    response = await client.put("/admin/pricing", headers=admin.headers, json=overrides)
    assert response.status_code == 200, response.text
    now = {(p["provider"], p["model"]): p for p in response.json()["prices"]}
    assert now[("openai", "gpt-4o-mini")]["source"] == "override"
    assert now[("openai", "gpt-4o-mini")]["updated_at"] is not None
    assert now[("openai", "my-fine-tune")]["input_usd_per_million"] == 7.5

    final = await run(
        client,
        admin,
        [
            step("a", "gpt-4o-mini", "Hi {{x}}", "out_a"),
            step("b", "my-fine-tune", "Hi {{x}}", "out_b"),
        ],
        {"x": "y"},
    )
    a, b = final["steps"]["a"]["usage"], final["steps"]["b"]["usage"]
    assert a["cost_usd"] == pytest.approx(
        expected_cost(a["input_tokens"], a["output_tokens"], (1000, 2000))
    )
    assert b["cost_usd"] == pytest.approx(expected_cost(b["input_tokens"], 0, (7.5, 0)))

    withdrawn = await client.put("/admin/pricing", headers=admin.headers, json={"prices": []})
    after = {(p["provider"], p["model"]): p for p in withdrawn.json()["prices"]}
    assert after[("openai", "gpt-4o-mini")]["source"] == "default"
    assert ("openai", "my-fine-tune") not in after


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {
                "prices": [
                    {
                        "provider": "openai",
                        "model": "m",
                        "input_usd_per_million": -1,
                        "output_usd_per_million": 1,
                    }
                ]
            },
            "prices[0].input_usd_per_million",
        ),
        (
            {
                "prices": [
                    {
                        "provider": "mistral",
                        "model": "m",
                        "input_usd_per_million": 1,
                        "output_usd_per_million": 1,
                    }
                ]
            },
            "prices[0].provider",
        ),
        (
            {
                "prices": [
                    {
                        "provider": "openai",
                        "model": "",
                        "input_usd_per_million": 1,
                        "output_usd_per_million": 1,
                    }
                ]
            },
            "prices[0].model",
        ),
        (
            {"prices": [{"provider": "openai", "model": "m", "input_usd_per_million": 1}]},
            "prices[0].output_usd_per_million",
        ),
        (
            {
                "prices": [
                    {
                        "provider": "openai",
                        "model": "m",
                        "input_usd_per_million": 1,
                        "output_usd_per_million": 1,
                        "currency": "EUR",
                    }
                ]
            },
            "prices[0].currency",
        ),
        (
            {
                "prices": [
                    {
                        "provider": "openai",
                        "model": "m",
                        "input_usd_per_million": 1,
                        "output_usd_per_million": 1,
                    }
                ]
                * 2
            },
            "prices[1]",
        ),
    ],
)
async def test_a_bad_price_table_is_refused_field_by_field(
    client: httpx.AsyncClient, admin: Session, body: dict[str, Any], field: str
) -> None:
    response = await client.put("/admin/pricing", headers=admin.headers, json=body)

    assert response.status_code == 400, response.text
    assert response.json()["code"] == "validation_error"
    assert field in [e["field"] for e in response.json()["details"]["errors"]]


async def test_only_admins_see_or_set_prices(
    client: httpx.AsyncClient, create_user: CreateUser
) -> None:
    developer = await create_user("dev")

    assert (await client.get("/admin/pricing", headers=developer.headers)).status_code == 403
    refused = await client.put("/admin/pricing", headers=developer.headers, json={"prices": []})
    assert refused.status_code == 403


async def test_metrics_and_stats_count_tokens_and_spend_per_model(
    client: httpx.AsyncClient, admin: Session, fake_openai: FakeOpenAI
) -> None:
    final = await run(client, admin, [step("a", "gpt-4o-mini", "Hi {{x}}", "out")], {"x": "y"})
    usage = final["steps"]["a"]["usage"]

    text = (await client.get("/metrics")).text
    labels = 'model="gpt-4o-mini",provider="openai"'
    assert (
        f'orchestrator_tokens_total{{direction="input",{labels}}} {usage["input_tokens"]}.0' in text
    )
    assert (
        f'orchestrator_tokens_total{{direction="output",{labels}}} {usage["output_tokens"]}.0'
        in text
    )
    cost_line = next(
        line for line in text.splitlines() if line.startswith("orchestrator_cost_usd_total{")
    )
    assert cost_line.startswith(f"orchestrator_cost_usd_total{{{labels}}} ")
    assert float(cost_line.split()[-1]) == pytest.approx(usage["cost_usd"])

    stats = (await client.get("/admin/stats", headers=admin.headers)).json()
    assert stats["spend_today_usd"] == pytest.approx(usage["cost_usd"], abs=1e-6)
    assert stats["spend_month_usd"] == pytest.approx(usage["cost_usd"], abs=1e-6)
