"""Completion events: when an execution ends, an EventBridge-shaped event says so.

``{"source": "llm-orchestrator", "detail-type": "Execution Completed" | "Execution Failed" |
"Execution Cancelled" | "Execution Timed Out", "detail": {execution_id, workflow_id,
status, owner_id, started_at, completed_at, error}}``. Never outputs or inputs (they may
hold anything), never a secret: ``error`` is the execution's readable error record.

Locally the event is logged and dispatched to the event triggers, exactly as if it had
been posted to ``POST /events`` (a workflow's own completion never re-triggers it). On
AWS it is put on ``LLMO_EVENT_BUS``, where rules (triggers among them) pick it up.
Delivery is at least once: consumers should key on ``execution_id`` and ``status``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from llm_orchestrator.executions.status import ExecutionStatus
from llm_orchestrator.store.executions import ExecutionRecord
from llm_orchestrator.store.triggers import TriggerRecord
from llm_orchestrator.triggers.events import envelope
from llm_orchestrator.triggers.service import COMPLETION_SOURCE, TriggerService

log = logging.getLogger(__name__)

DETAIL_TYPES = {
    ExecutionStatus.COMPLETED: "Execution Completed",
    ExecutionStatus.FAILED: "Execution Failed",
    ExecutionStatus.CANCELLED: "Execution Cancelled",
    ExecutionStatus.TIMED_OUT: "Execution Timed Out",
}


def completion_detail(record: ExecutionRecord) -> dict[str, Any]:
    return {
        "execution_id": record.id,
        "workflow_id": str(record.workflow_id),
        "status": record.status,
        "owner_id": record.owner_id,
        "started_at": record.started_at.isoformat(),
        "completed_at": record.completed_at.isoformat() if record.completed_at else None,
        "error": record.error,
    }


class CompletionPublisher(Protocol):
    reads_live_triggers: bool
    """Whether it matches the event triggers itself (then the statement that writes the
    end can read them for it: ``live``)."""

    async def publish(
        self, record: ExecutionRecord, live: list[TriggerRecord] | None = None
    ) -> None: ...


class LocalCompletionEvents:
    """Logged, and matched against the event triggers in this process."""

    reads_live_triggers = True

    def __init__(self, triggers: TriggerService, clock: Callable[[], datetime]) -> None:
        self._triggers = triggers
        self._now = clock

    async def publish(
        self, record: ExecutionRecord, live: list[TriggerRecord] | None = None
    ) -> None:
        """``live``: the live event triggers, if read with the end (else read here)."""
        detail_type = DETAIL_TYPES.get(record.status)
        if detail_type is None:
            return
        event = envelope(
            source=COMPLETION_SOURCE,
            detail_type=detail_type,
            detail=completion_detail(record),
            resources=[record.id],
            now=self._now(),
        )
        log.info("completion event %s", json.dumps(event, sort_keys=True))
        try:
            for firing in await self._triggers.dispatch(event, live):
                log.info(
                    "completion of %s fired trigger %s: %s",
                    record.id,
                    firing.trigger_id,
                    firing.execution_id or firing.error or firing.skipped,
                )
        except Exception:
            # The execution has ended either way; a trigger that could not fire says so in
            # the log rather than undoing that.
            log.exception("completion event of %s could not be dispatched", record.id)


class EventBridgeCompletionEvents:
    """PutEvents on ``LLMO_EVENT_BUS``; boto3 imported on first use."""

    reads_live_triggers = False

    def __init__(self, event_bus: str, *, client: Any = None) -> None:
        self._bus = event_bus
        self._client = client

    async def publish(
        self, record: ExecutionRecord, live: list[TriggerRecord] | None = None
    ) -> None:
        detail_type = DETAIL_TYPES.get(record.status)
        if detail_type is None:
            return
        try:
            await asyncio.to_thread(self._put, record, detail_type)
        except Exception as exc:
            log.warning("completion event of %s not published: %s", record.id, exc)

    def _put(self, record: ExecutionRecord, detail_type: str) -> None:
        if self._client is None:
            import boto3

            self._client = boto3.client("events")
        answer = self._client.put_events(
            Entries=[
                {
                    "Source": COMPLETION_SOURCE,
                    "DetailType": detail_type,
                    "Detail": json.dumps(completion_detail(record)),
                    "Resources": [record.id],
                    "EventBusName": self._bus,
                }
            ]
        )
        if answer.get("FailedEntryCount"):
            entry = answer.get("Entries", [{}])[0]
            raise RuntimeError(f"{entry.get('ErrorCode')}: {entry.get('ErrorMessage')}")
