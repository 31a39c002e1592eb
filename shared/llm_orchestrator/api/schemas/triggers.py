"""Trigger and event shapes (beyond the reference: see the README's "Triggers")."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llm_orchestrator.api.schemas.common import PageMeta, StrictModel
from llm_orchestrator.triggers.schedule import MAX_SCHEDULE_CHARS

if TYPE_CHECKING:
    from llm_orchestrator.store.triggers import TriggerRecord
    from llm_orchestrator.triggers.service import Firing, TriggerSpec


class CreateTriggerRequest(StrictModel):
    type: Literal["schedule", "event"]
    schedule: str | None = Field(
        default=None,
        max_length=MAX_SCHEDULE_CHARS,
        description="schedule triggers: 'rate(5 minutes)' or 'cron(0 9 * * ? *)' (UTC)",
        examples=["rate(5 minutes)"],
    )
    event_pattern: dict[str, Any] | None = Field(
        default=None,
        description="event triggers: an EventBridge event pattern",
        examples=[{"source": ["my.app"], "detail": {"kind": [{"prefix": "doc"}]}}],
    )
    inputs: dict[str, Any] = Field(
        default_factory=dict,
        description="workflow inputs; a string starting with '$.' is a path into the event",
        examples=[{"text": "$.detail.text"}],
    )
    enabled: bool = True

    def spec(self) -> TriggerSpec:
        from llm_orchestrator.triggers.service import (
            TriggerSpec,  # the workflows Lambda's cold start
        )

        return TriggerSpec(
            type=self.type,
            schedule=self.schedule,
            event_pattern=self.event_pattern,
            inputs=self.inputs,
            enabled=self.enabled,
        )


class TriggerPublic(BaseModel):
    id: str
    workflow_id: uuid.UUID
    type: Literal["schedule", "event"]
    schedule: str | None = None
    event_pattern: dict[str, Any] | None = None
    inputs: dict[str, Any]
    enabled: bool
    status: Literal["active", "stopped"]
    status_reason: str | None = Field(description="why a stopped trigger no longer runs")
    created_by: str | None = Field(description="the user it runs as; null once deleted")
    created_at: datetime
    next_fire_at: datetime | None = Field(
        default=None, description="schedules run by the local scheduler: the next tick"
    )
    last_fired_at: datetime | None
    last_execution_id: str | None
    last_error: str | None = Field(description="why the last firing started no execution")

    @classmethod
    def of(cls, record: TriggerRecord) -> TriggerPublic:
        return cls(
            id=record.id,
            workflow_id=record.workflow_id,
            type=record.type,
            schedule=record.schedule,
            event_pattern=record.event_pattern,
            inputs=record.inputs,
            enabled=record.enabled,
            status=record.status,
            status_reason=record.status_reason,
            created_by=record.created_by,
            created_at=record.created_at,
            next_fire_at=record.next_fire_at,
            last_fired_at=record.last_fired_at,
            last_execution_id=record.last_execution_id,
            last_error=record.last_error,
        )


class TriggerList(PageMeta):
    triggers: list[TriggerPublic]


class PutEventRequest(StrictModel):
    """One PutEvents entry: matched against every live event trigger's pattern."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: str = Field(min_length=1, max_length=256, examples=["my.app"])
    detail_type: str = Field(
        alias="detail-type", min_length=1, max_length=128, examples=["Document Uploaded"]
    )
    detail: dict[str, Any] = Field(default_factory=dict, examples=[{"text": "hello"}])
    resources: list[str] = Field(default_factory=list, max_length=32)


class StartedExecution(BaseModel):
    trigger_id: str
    workflow_id: str
    execution_id: str | None
    error: str | None = None


class PutEventResponse(BaseModel):
    id: str = Field(description="the event's id (its envelope's 'id')")
    matched: int = Field(description="live event triggers whose pattern matched")
    executions: list[StartedExecution] = Field(
        description="what the caller's own matching triggers did (every one, for an admin)"
    )

    @classmethod
    def of(cls, event_id: str, firings: list[Firing], visible: set[str] | None) -> PutEventResponse:
        return cls(
            id=event_id,
            matched=len(firings),
            executions=[
                StartedExecution(
                    trigger_id=f.trigger_id,
                    workflow_id=f.workflow_id,
                    execution_id=f.execution_id,
                    error=f.error or (f"trigger {f.skipped}" if f.skipped else None),
                )
                for f in firings
                if visible is None or f.created_by in visible
            ],
        )
