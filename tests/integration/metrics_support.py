"""Rows inserted directly, as the engine would leave them, and the ``/metrics`` exposition
read back: what the metrics and admin statistics tests share."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from llm_orchestrator.store.db import Database

# -- rows inserted directly, as the engine would leave them ----------------------------------


async def insert_workflow(db: Database, owner_id: str, name: str = "wf") -> uuid.UUID:
    workflow_id = uuid.uuid4()
    async with db.connection() as conn:
        await conn.execute(
            "INSERT INTO workflows (id, owner_id, name, version, definition, timeout_seconds)"
            " VALUES (%s, %s, %s, '1.0.0', '{}'::jsonb, 300)",
            (workflow_id, owner_id, name),
        )
    return workflow_id


async def insert_execution(
    db: Database,
    workflow_id: uuid.UUID,
    owner_id: str,
    status: str,
    *,
    duration_ms: float | None = None,
) -> str:
    execution_id = f"exec-{uuid.uuid4()}"
    started = datetime(2025, 1, 1, tzinfo=UTC)
    completed = started + timedelta(milliseconds=duration_ms) if duration_ms is not None else None
    async with db.connection() as conn:
        await conn.execute(
            "INSERT INTO executions (id, workflow_id, owner_id, status, inputs, definition,"
            " state_machine, timeout_seconds, started_at, completed_at)"
            " VALUES (%s, %s, %s, %s, '{}'::jsonb, '{}'::jsonb, '{}'::jsonb, 300, %s, %s)",
            (execution_id, workflow_id, owner_id, status, started, completed),
        )
    return execution_id


async def insert_step_run(
    db: Database,
    execution_id: str,
    step_id: str,
    *,
    step_type: str = "llm",
    provider: str | None = "openai",
    latency_ms: float | None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    status: str = "completed",
) -> None:
    async with db.connection() as conn:
        await conn.execute(
            "INSERT INTO step_runs (execution_id, step_id, step_type, provider, status,"
            " latency_ms, input_tokens, output_tokens) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                execution_id,
                step_id,
                step_type,
                provider,
                status,
                latency_ms,
                input_tokens,
                output_tokens,
            ),
        )


# -- reading the exposition ------------------------------------------------------------------


async def scrape(client: httpx.AsyncClient) -> dict[str, Metric]:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def value(family: Metric, sample_name: str, **labels: str) -> float:
    matches = [s.value for s in family.samples if s.name == sample_name and s.labels == labels]
    assert len(matches) == 1, (sample_name, labels, family.samples)
    return matches[0]
