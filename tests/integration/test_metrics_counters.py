"""/metrics counters never go down: a restore that forgets later steps, or a deleted
workflow that takes its executions with it, leaves the counted history in place."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.conftest import Session
from tests.integration.execution_support import (
    create_workflow,
    llm_step,
    start_execution,
    wait_for,
)
from tests.integration.metrics_support import scrape, value

pytestmark = pytest.mark.usefixtures("fake_openai")
"""Every test here runs on the fake OpenAI server (conftest's ``server`` points at it)."""


async def counters(client: httpx.AsyncClient) -> dict[str, float]:
    families = await scrape(client)
    steps = families["orchestrator_step_duration_seconds"]
    return {
        "completed": value(
            families["orchestrator_executions"], "orchestrator_executions_total", status="completed"
        ),
        "steps": value(
            steps, "orchestrator_step_duration_seconds_count", step_type="llm", provider="openai"
        ),
        "output_tokens": value(
            families["orchestrator_provider_tokens"],
            "orchestrator_provider_tokens_total",
            provider="openai",
            direction="output",
        ),
    }


async def test_restore_and_delete_never_decrease_the_counters(
    client: httpx.AsyncClient, admin: Session
) -> None:
    steps = [llm_step("a", "one {{x}}", "y"), llm_step("b", "two {{y}}", "z", depends_on=["a"])]
    workflow_id = await create_workflow(client, admin, steps)
    execution_id = await start_execution(client, admin, workflow_id, {"x": "go"})
    await wait_for(client, admin, workflow_id, execution_id)
    first = await counters(client)
    checkpoints = (
        await client.get(
            f"/state/{workflow_id}/checkpoints",
            headers=admin.headers,
            params={"executionId": execution_id},
        )
    ).json()["checkpoints"]
    after_a = next(c["id"] for c in checkpoints if c["step_id"] == "a")

    # Given a restore that forgets step b and runs it again
    restored = await client.post(
        f"/state/{workflow_id}/restore", headers=admin.headers, json={"checkpointId": after_a}
    )
    assert restored.status_code == 200, restored.text
    await wait_for(client, admin, workflow_id, execution_id)
    second = await counters(client)

    # Then the second run of b adds to the history instead of replacing it
    assert second["completed"] == first["completed"] + 1
    assert second["steps"] == first["steps"] + 1
    assert second["output_tokens"] > first["output_tokens"]

    # And deleting the workflow (and with it the execution) takes nothing back
    deleted = await client.delete(f"/workflows/{workflow_id}", headers=admin.headers)
    assert deleted.status_code == 204
    assert await counters(client) == second
