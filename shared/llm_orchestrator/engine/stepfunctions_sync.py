"""Step Functions status changes applied to executions in PostgreSQL.

PostgreSQL is the source of truth; Step Functions only reports how a run ended. The
``events`` Lambda feeds this the EventBridge "Step Functions Execution Status Change"
events, and the engine feeds it what DescribeExecution says while it waits (and on a
laptop against moto, where no EventBridge delivers anything). Every rule is a
conditional update, so duplicated, late and out-of-order reports are harmless:

- a report about a run that is not the execution's current one (a run a restore
  replaced) changes nothing;
- RUNNING moves only ``pending`` to ``running``;
- an ending (SUCCEEDED, FAILED, TIMED_OUT, ABORTED) is the run's end, written through the
  execution lifecycle: it ends only an execution still active (a cancel through the API
  has ended it already, so a later ABORTED changes nothing), and a failure the step
  runner recorded beforehand is kept as the execution's error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llm_orchestrator.executions.errors import WorkflowCancelled, error_record
from llm_orchestrator.executions.lifecycle import ExecutionLifecycle
from llm_orchestrator.executions.status import TERMINAL, ExecutionStatus
from llm_orchestrator.store.executions import ExecutionRepository

log = logging.getLogger(__name__)

STATUS_CHANGE_SOURCE = "aws.states"
STATUS_CHANGE_DETAIL_TYPE = "Step Functions Execution Status Change"
ENDINGS = {
    "SUCCEEDED": ExecutionStatus.COMPLETED,
    "FAILED": ExecutionStatus.FAILED,
    "TIMED_OUT": ExecutionStatus.TIMED_OUT,
    "ABORTED": ExecutionStatus.CANCELLED,
}
RUN_SEPARATOR = "-run-"


def run_name(execution_id: str, run_number: int) -> str:
    """The Step Functions execution name of an execution's run: its id for the first run,
    ``<id>-run-<n>`` for the run a restore starts (names are unique per state machine)."""
    return execution_id if run_number <= 1 else f"{execution_id}{RUN_SEPARATOR}{run_number}"


@dataclass(frozen=True)
class StatusChange:
    execution_id: str
    run_name: str
    status: str
    error: str | None = None
    cause: str | None = None

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> StatusChange | None:
        """The change an EventBridge status-change event reports; None if it is not one of
        ours (another state machine's, or malformed)."""
        if (
            event.get("source") != STATUS_CHANGE_SOURCE
            or event.get("detail-type") != STATUS_CHANGE_DETAIL_TYPE
        ):
            return None
        detail = event.get("detail")
        return cls.from_description(detail) if isinstance(detail, Mapping) else None

    @classmethod
    def from_description(cls, described: Mapping[str, Any]) -> StatusChange | None:
        """From DescribeExecution's answer or an event's ``detail`` (the same fields)."""
        try:
            payload = json.loads(described.get("input") or "{}")
        except (TypeError, ValueError):
            return None
        execution_id = payload.get("execution_id") if isinstance(payload, dict) else None
        name, status = described.get("name"), described.get("status")
        if not isinstance(execution_id, str) or not isinstance(name, str):
            return None
        if not isinstance(status, str):
            return None
        error, cause = described.get("error"), described.get("cause")
        return cls(
            execution_id=execution_id,
            run_name=name,
            status=status,
            error=error if isinstance(error, str) else None,
            cause=cause if isinstance(cause, str) else None,
        )


class StatusSync:
    def __init__(self, repo: ExecutionRepository, lifecycle: ExecutionLifecycle) -> None:
        self._repo = repo
        self._lifecycle = lifecycle

    async def apply(self, change: StatusChange) -> str:
        """Apply one report; returns what it did (for logs and tests)."""
        record = await self._repo.get(change.execution_id)
        if record is None:
            return "unknown execution"
        if change.run_name != run_name(record.id, record.run_number):
            return "stale run"
        if change.status == "RUNNING":
            await self._lifecycle.running(record.id)
            return ExecutionStatus.RUNNING.value
        status = ENDINGS.get(change.status)
        if status is None:
            return "ignored status"
        if record.status in TERMINAL:
            return "already ended"
        ended = await self._lifecycle.finish(record.id, status, error=_error(status, change))
        if ended is None:
            return "already ended"
        log.info("execution %s ended %s in Step Functions", record.id, ended.status)
        return ended.status.value


def _error(status: ExecutionStatus, change: StatusChange) -> dict[str, Any] | None:
    if status == ExecutionStatus.COMPLETED:
        return None
    if status == ExecutionStatus.CANCELLED:
        return error_record(
            WorkflowCancelled.__name__, "the execution was stopped in Step Functions", None
        )
    if status == ExecutionStatus.TIMED_OUT:
        return error_record(
            change.error or "States.Timeout",
            change.cause or "the execution did not finish within its timeout",
            None,
        )
    return error_record(
        change.error or "States.Failed",
        _readable(change.cause) or "the execution failed in Step Functions",
        None,
    )


def _readable(cause: str | None) -> str | None:
    """A Lambda function error's cause is its JSON error document: keep the message."""
    if not cause or not cause.startswith("{"):
        return cause
    try:
        document = json.loads(cause)
    except ValueError:
        return cause
    message = document.get("errorMessage") if isinstance(document, dict) else None
    return message if isinstance(message, str) else cause
