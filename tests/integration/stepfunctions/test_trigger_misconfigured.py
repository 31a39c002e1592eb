"""A trigger AWS refuses: a bus that does not exist (``LLMO_EVENT_BUS`` naming nothing)
answers 503 in the error envelope, naming the setting to check; a pattern EventBridge
finds invalid is the trigger's own fault (400). Neither leaves a trigger or a rule behind."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import boto3
import httpx
import pytest

from llm_orchestrator.config import Settings
from llm_orchestrator.errors import ValidationFailed
from llm_orchestrator.store.triggers import TriggerRecord
from llm_orchestrator.triggers.eventbridge import EventBridgeSettings, EventBridgeTriggers
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


async def test_a_pattern_eventbridge_refuses_is_a_400_and_leaves_no_rule(sfn: Any) -> None:
    events = boto3.client("events", region_name=REGION)
    adapter = EventBridgeTriggers(
        EventBridgeSettings(
            events_function_arn="arn:aws:lambda:us-east-1:123456789012:function:events",
            scheduler_role_arn="arn:aws:iam::123456789012:role/scheduler",
            schedule_group="default",
            event_bus="default",
        ),
        events=events,
    )
    # A pattern this API's own checks would refuse first; EventBridge refuses it too.
    trigger = TriggerRecord(
        id="trg-refused",
        workflow_id=uuid4(),
        type="event",
        schedule=None,
        event_pattern={"source": "not-a-list"},
        inputs={},
        enabled=True,
        status="active",
        status_reason=None,
        created_by=None,
        created_at=datetime.now(UTC),
        next_fire_at=None,
        last_fired_at=None,
        last_execution_id=None,
        last_error=None,
    )

    with pytest.raises(ValidationFailed) as refused:
        await adapter.install(trigger)

    assert str(refused.value.message) == (
        "EventBridge refused the trigger's event pattern (InvalidEventPatternException)"
    )
    assert events.list_rules()["Rules"] == []
