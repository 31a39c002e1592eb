"""Triggers on AWS: an EventBridge Scheduler schedule or an EventBridge rule per trigger,
each targeting the ``events`` Lambda, which fires the trigger (see ``events_lambda.py``).

- A schedule is ``<trigger id>`` in ``LLMO_SCHEDULE_GROUP``, in UTC, with no flexible
  window; its target input is ``{"trigger_id", "scheduled_time", "delivery_id"}`` (the last
  two are Scheduler's context attributes, so a redelivered tick is recognised).
- An event trigger is the rule ``llmo-<trigger id>`` on ``LLMO_EVENT_BUS`` with the
  trigger's pattern; an input transformer hands the Lambda
  ``{"trigger_id", "event": <the matched event>}``.

Both are created disabled when the trigger is, and removed with it (a missing one is
fine: removal is idempotent). boto3 is imported on first use; calls run in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass
from typing import Any

from llm_orchestrator.errors import ServiceUnavailable, ValidationFailed
from llm_orchestrator.store.triggers import TriggerRecord

RULE_PREFIX = "llmo-"
TARGET_ID = "llmo-events"
_MISSING = ("ResourceNotFoundException",)
# What AWS says of a schedule expression or an event pattern it will not take.
_INVALID = ("ValidationException", "InvalidEventPatternException")


@dataclass(frozen=True)
class EventBridgeSettings:
    events_function_arn: str
    scheduler_role_arn: str
    schedule_group: str
    event_bus: str


def rule_name(trigger_id: str) -> str:
    return f"{RULE_PREFIX}{trigger_id}"


def schedule_input(trigger_id: str) -> str:
    return json.dumps(
        {
            "trigger_id": trigger_id,
            "scheduled_time": "<aws.scheduler.scheduled-time>",
            "delivery_id": "<aws.scheduler.execution-id>",
        }
    )


def rule_input_template(trigger_id: str) -> str:
    # <aws.events.event> is replaced by the whole matched event (a JSON object).
    return f'{{"trigger_id": {json.dumps(trigger_id)}, "event": <aws.events.event>}}'


class EventBridgeTriggers:
    def __init__(
        self, settings: EventBridgeSettings, *, scheduler: Any = None, events: Any = None
    ) -> None:
        self._settings = settings
        self._scheduler = scheduler
        self._events = events

    fires_in_process = False

    async def install(self, trigger: TriggerRecord) -> None:
        """Create the trigger's schedule or rule. When AWS refuses: ``ValidationFailed``
        (400) for what it finds wrong in the trigger itself, else ``ServiceUnavailable``
        (503) naming the setting to check (the caller then drops the trigger's row)."""
        from botocore.exceptions import BotoCoreError, ClientError

        schedule = trigger.type == "schedule"
        try:
            if schedule:
                await asyncio.to_thread(self._create_schedule, trigger)
            else:
                await asyncio.to_thread(self._create_rule, trigger)
        except ClientError as exc:
            # A rule created before its target was refused must not stay behind; failing to
            # remove it must not hide why the trigger was refused.
            with contextlib.suppress(ClientError, BotoCoreError):
                await self.remove(trigger)
            raise self._refused(exc, schedule) from None

    def _refused(self, exc: Any, schedule: bool) -> ServiceUnavailable | ValidationFailed:
        # AWS's own message may name the account and ARNs; the error code and the name the
        # operator configured say what to fix.
        code = str(exc.response.get("Error", {}).get("Code") or "an error")
        what = "schedule expression" if schedule else "event pattern"
        if code in _INVALID:
            return ValidationFailed(f"EventBridge refused the trigger's {what} ({code})")
        if schedule:
            where = f"EventBridge Scheduler group '{self._settings.schedule_group}'"
            setting = "LLMO_SCHEDULE_GROUP"
        else:
            where = f"EventBridge event bus '{self._settings.event_bus}'"
            setting = "LLMO_EVENT_BUS"
        if code in _MISSING:
            reason = f"the {where} does not exist: check {setting}"
        else:
            reason = f"AWS answered {code} creating it on the {where}"
        return ServiceUnavailable(f"The trigger was not created: {reason}")

    async def remove(self, trigger: TriggerRecord) -> None:
        # Both kinds: a trigger known only by id (its row is gone) may be either.
        await asyncio.to_thread(self._delete_schedule, trigger.id)
        await asyncio.to_thread(self._delete_rule, trigger.id)

    # -- Scheduler ----------------------------------------------------------------------

    def _create_schedule(self, trigger: TriggerRecord) -> None:
        assert trigger.schedule is not None
        self._sched().create_schedule(
            Name=trigger.id,
            GroupName=self._settings.schedule_group,
            ScheduleExpression=trigger.schedule,
            ScheduleExpressionTimezone="UTC",
            FlexibleTimeWindow={"Mode": "OFF"},
            State="ENABLED" if trigger.enabled else "DISABLED",
            Description=f"llm-orchestrator trigger of workflow {trigger.workflow_id}",
            Target={
                "Arn": self._settings.events_function_arn,
                "RoleArn": self._settings.scheduler_role_arn,
                "Input": schedule_input(trigger.id),
            },
        )

    def _delete_schedule(self, trigger_id: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self._sched().delete_schedule(Name=trigger_id, GroupName=self._settings.schedule_group)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in _MISSING:
                raise

    # -- rules --------------------------------------------------------------------------

    def _create_rule(self, trigger: TriggerRecord) -> None:
        name = rule_name(trigger.id)
        events = self._eb()
        events.put_rule(
            Name=name,
            EventBusName=self._settings.event_bus,
            EventPattern=json.dumps(trigger.event_pattern),
            State="ENABLED" if trigger.enabled else "DISABLED",
            Description=f"llm-orchestrator trigger of workflow {trigger.workflow_id}",
        )
        events.put_targets(
            Rule=name,
            EventBusName=self._settings.event_bus,
            Targets=[
                {
                    "Id": TARGET_ID,
                    "Arn": self._settings.events_function_arn,
                    "InputTransformer": {
                        "InputPathsMap": {},
                        "InputTemplate": rule_input_template(trigger.id),
                    },
                }
            ],
        )

    def _delete_rule(self, trigger_id: str) -> None:
        from botocore.exceptions import ClientError

        name = rule_name(trigger_id)
        events = self._eb()
        try:
            events.remove_targets(
                Rule=name, EventBusName=self._settings.event_bus, Ids=[TARGET_ID], Force=True
            )
            events.delete_rule(Name=name, EventBusName=self._settings.event_bus, Force=True)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in _MISSING:
                raise

    def _sched(self) -> Any:
        if self._scheduler is None:
            import boto3

            self._scheduler = boto3.client("scheduler")
        return self._scheduler

    def _eb(self) -> Any:
        if self._events is None:
            import boto3

            self._events = boto3.client("events")
        return self._events
