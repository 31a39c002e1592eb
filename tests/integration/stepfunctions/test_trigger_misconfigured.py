"""A trigger whose EventBridge bus does not exist (``LLMO_EVENT_BUS`` naming nothing):
creating it answers 503 in the error envelope, naming the setting to check, and leaves no
trigger and no rule behind."""

from __future__ import annotations

from typing import Any

import boto3
import httpx
import pytest

from llm_orchestrator.config import Settings
from tests.integration.conftest import Session
from tests.integration.execution_support import create_workflow, llm_step
from tests.moto_support import REGION

MISSING_BUS = "no-such-bus"


@pytest.fixture
def sfn_settings(sfn_settings: Settings) -> Settings:
    return sfn_settings.model_copy(update={"event_bus": MISSING_BUS})


async def test_a_missing_event_bus_is_a_503_naming_the_setting_and_nothing_is_kept(
    client: httpx.AsyncClient, admin: Session, sfn: Any
) -> None:
    workflow_id = await create_workflow(client, admin, [llm_step("a", "Say {{text}}", "said")])
    triggers = f"/workflows/{workflow_id}/triggers"

    response = await client.post(
        triggers,
        headers=admin.headers,
        json={"type": "event", "event_pattern": {"source": ["my.app"]}, "inputs": {"text": "x"}},
    )

    assert response.status_code == 503, response.text
    body = response.json()
    assert body["code"] == "service_unavailable"
    assert f"'{MISSING_BUS}' does not exist" in body["message"]
    assert "LLMO_EVENT_BUS" in body["message"]
    assert body["request_id"]
    listed = await client.get(triggers, headers=admin.headers)
    assert listed.status_code == 200 and listed.json()["triggers"] == []
    rules = boto3.client("events", region_name=REGION).list_rules()["Rules"]
    assert rules == []
