"""Triggers with LLMO_ENGINE=stepfunctions: EventBridge Scheduler schedules and EventBridge
rules in moto, each targeting the events Lambda; invoking the events handler with their
target input starts the execution (row first, then a Step Functions execution)."""

from __future__ import annotations

import json
from typing import Any

import boto3
import httpx

from llm_orchestrator.config import Settings
from llm_orchestrator.triggers.eventbridge import rule_name
from tests.aws_support import SCHEDULER_ROLE, deliver, moto_execution, moto_status
from tests.integration.conftest import Session
from tests.integration.execution_support import create_workflow, get_status, llm_step
from tests.moto_support import REGION

STEPS = [llm_step("a", "Summarise: {{text}}", "summary")]


def scheduler() -> Any:
    return boto3.client("scheduler", region_name=REGION)


def eventbridge() -> Any:
    return boto3.client("events", region_name=REGION)


async def add_trigger(
    client: httpx.AsyncClient, session: Session, workflow_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    response = await client.post(
        f"/workflows/{workflow_id}/triggers", headers=session.headers, json=body
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_a_schedule_is_an_eventbridge_schedule_whose_input_starts_the_execution(
    client: httpx.AsyncClient,
    admin: Session,
    sfn: Any,
    sfn_settings: Settings,
    events: Any,
) -> None:
    workflow_id = await create_workflow(client, admin, STEPS)
    trigger = await add_trigger(
        client,
        admin,
        workflow_id,
        {"type": "schedule", "schedule": "cron(0 9 ? * MON-FRI *)", "inputs": {"text": "daily"}},
    )

    schedule = scheduler().get_schedule(Name=trigger["id"], GroupName="default")
    assert schedule["ScheduleExpression"] == "cron(0 9 ? * MON-FRI *)"
    assert schedule["ScheduleExpressionTimezone"] == "UTC"
    assert schedule["State"] == "ENABLED"
    assert schedule["Target"]["Arn"] == sfn_settings.events_function_arn
    assert schedule["Target"]["RoleArn"] == SCHEDULER_ROLE
    assert trigger["next_fire_at"] is None, "EventBridge fires it, not this process"
    target_input = (
        schedule["Target"]["Input"]
        .replace("<aws.scheduler.scheduled-time>", "2026-12-01T09:00:00Z")
        .replace("<aws.scheduler.execution-id>", "delivery-1")
    )

    delivered = await deliver(events, json.loads(target_input))
    redelivered = await deliver(events, json.loads(target_input))

    assert delivered["outcome"] == "started", delivered
    assert redelivered["outcome"] == "duplicate"
    execution_id = delivered["execution_id"]
    status = await get_status(client, admin, workflow_id, execution_id)
    assert status["context"]["inputs"] == {"text": "daily"}
    described = await moto_status(sfn, execution_id, ("SUCCEEDED", "FAILED"))
    assert described["status"] == "SUCCEEDED"


async def test_an_event_trigger_is_a_rule_whose_transformed_input_starts_the_execution(
    client: httpx.AsyncClient,
    admin: Session,
    sfn: Any,
    sfn_settings: Settings,
    events: Any,
) -> None:
    workflow_id = await create_workflow(client, admin, STEPS)
    pattern = {"source": ["my.app"], "detail": {"size": [{"numeric": [">", 100]}]}}
    trigger = await add_trigger(
        client,
        admin,
        workflow_id,
        {"type": "event", "event_pattern": pattern, "inputs": {"text": "$.detail.text"}},
    )

    rule = eventbridge().describe_rule(Name=rule_name(trigger["id"]), EventBusName="default")
    assert json.loads(rule["EventPattern"]) == pattern
    assert rule["State"] == "ENABLED"
    [target] = eventbridge().list_targets_by_rule(Rule=rule_name(trigger["id"]))["Targets"]
    assert target["Arn"] == sfn_settings.events_function_arn
    matched_event = {
        "version": "0",
        "id": "event-1",
        "source": "my.app",
        "detail-type": "Document Uploaded",
        "account": "123456789012",
        "time": "2026-12-01T09:00:00Z",
        "region": REGION,
        "resources": [],
        "detail": {"size": 120, "text": "from EventBridge"},
    }
    template = target["InputTransformer"]["InputTemplate"]
    delivery = json.loads(template.replace("<aws.events.event>", json.dumps(matched_event)))

    delivered = await deliver(events, delivery)

    assert delivered["outcome"] == "started", delivered
    status = await get_status(client, admin, workflow_id, delivered["execution_id"])
    assert status["context"]["inputs"] == {"text": "from EventBridge"}
    assert moto_execution(sfn, delivered["execution_id"])["name"] == delivered["execution_id"]


async def test_deleting_a_trigger_removes_its_schedule_or_rule(
    client: httpx.AsyncClient, admin: Session, sfn: Any
) -> None:
    workflow_id = await create_workflow(client, admin, STEPS)
    schedule = await add_trigger(
        client,
        admin,
        workflow_id,
        {"type": "schedule", "schedule": "rate(1 hour)", "inputs": {"text": "x"}},
    )
    rule = await add_trigger(
        client,
        admin,
        workflow_id,
        {"type": "event", "event_pattern": {"source": ["x"]}, "inputs": {"text": "x"}},
    )

    for trigger in (schedule, rule):
        response = await client.delete(
            f"/workflows/{workflow_id}/triggers/{trigger['id']}", headers=admin.headers
        )
        assert response.status_code == 204

    assert scheduler().list_schedules()["Schedules"] == []
    assert eventbridge().list_rules(NamePrefix="llmo-")["Rules"] == []


async def test_a_delivery_for_a_deleted_workflow_removes_its_schedule(
    client: httpx.AsyncClient, admin: Session, sfn: Any, events: Any
) -> None:
    workflow_id = await create_workflow(client, admin, STEPS)
    trigger = await add_trigger(
        client,
        admin,
        workflow_id,
        {"type": "schedule", "schedule": "rate(1 hour)", "inputs": {"text": "x"}},
    )
    assert (
        await client.delete(f"/workflows/{workflow_id}", headers=admin.headers)
    ).status_code == 204

    delivered = await deliver(events, {"trigger_id": trigger["id"], "delivery_id": "d-1"})

    assert delivered["outcome"] == "trigger gone; schedule or rule removed"
    assert scheduler().list_schedules()["Schedules"] == []


async def test_a_disabled_trigger_is_created_disabled(
    client: httpx.AsyncClient, admin: Session, sfn: Any
) -> None:
    workflow_id = await create_workflow(client, admin, STEPS)
    trigger = await add_trigger(
        client,
        admin,
        workflow_id,
        {
            "type": "event",
            "event_pattern": {"source": ["x"]},
            "inputs": {"text": "x"},
            "enabled": False,
        },
    )

    rule = eventbridge().describe_rule(Name=rule_name(trigger["id"]))
    assert rule["State"] == "DISABLED"


async def test_an_ended_execution_puts_its_completion_event_on_the_bus(
    client: httpx.AsyncClient, admin: Session, sfn: Any
) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    queue_url = sqs.create_queue(QueueName="completions")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    eventbridge().put_rule(Name="watch", EventPattern=json.dumps({"source": ["llm-orchestrator"]}))
    eventbridge().put_targets(Rule="watch", Targets=[{"Id": "q", "Arn": queue_arn}])
    workflow_id = await create_workflow(client, admin, STEPS)
    execution_id = (
        await client.post(
            f"/workflows/{workflow_id}/execute",
            headers=admin.headers,
            json={"inputs": {"text": "x"}},
        )
    ).json()["execution_id"]

    cancelled = await client.post(
        f"/workflows/{workflow_id}/cancel",
        headers=admin.headers,
        params={"executionId": execution_id},
    )

    assert cancelled.json()["status"] == "cancelled"
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    [event] = [json.loads(m["Body"]) for m in messages]
    assert event["detail-type"] == "Execution Cancelled"
    assert event["detail"]["execution_id"] == execution_id
    assert event["detail"]["workflow_id"] == workflow_id
    assert event["detail"]["status"] == "cancelled"
    assert event["detail"]["error"]["type"] == "WorkflowCancelled"
