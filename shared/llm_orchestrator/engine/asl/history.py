"""What an execution did: its final status and an AWS-style event history.

Event types carry the names of Step Functions' ``GetExecutionHistory`` events, so a history
can be compared with moto's; ``RetryScheduled`` is the one addition (AWS shows a retry only
as another ``TaskScheduled``), and it records the backoff delay that was used.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class ExecutionStatus(enum.StrEnum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    ABORTED = "ABORTED"


class HistoryEventType(enum.StrEnum):
    EXECUTION_STARTED = "ExecutionStarted"
    EXECUTION_SUCCEEDED = "ExecutionSucceeded"
    EXECUTION_FAILED = "ExecutionFailed"
    EXECUTION_TIMED_OUT = "ExecutionTimedOut"
    EXECUTION_ABORTED = "ExecutionAborted"
    TASK_STATE_ENTERED = "TaskStateEntered"
    TASK_SCHEDULED = "TaskScheduled"
    TASK_STARTED = "TaskStarted"
    TASK_SUBMITTED = "TaskSubmitted"
    TASK_SUCCEEDED = "TaskSucceeded"
    TASK_FAILED = "TaskFailed"
    TASK_TIMED_OUT = "TaskTimedOut"
    RETRY_SCHEDULED = "RetryScheduled"
    TASK_STATE_EXITED = "TaskStateExited"
    TASK_STATE_ABORTED = "TaskStateAborted"
    PARALLEL_STATE_ENTERED = "ParallelStateEntered"
    PARALLEL_STATE_STARTED = "ParallelStateStarted"
    PARALLEL_STATE_SUCCEEDED = "ParallelStateSucceeded"
    PARALLEL_STATE_FAILED = "ParallelStateFailed"
    PARALLEL_STATE_EXITED = "ParallelStateExited"
    PARALLEL_STATE_ABORTED = "ParallelStateAborted"
    PASS_STATE_ENTERED = "PassStateEntered"
    PASS_STATE_EXITED = "PassStateExited"
    SUCCEED_STATE_ENTERED = "SucceedStateEntered"
    SUCCEED_STATE_EXITED = "SucceedStateExited"
    FAIL_STATE_ENTERED = "FailStateEntered"


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One event; only the fields that mean something for its ``type`` are set.

    ``retry_count`` is ``$$.State.RetryCount`` of the attempt (``TaskScheduled``) or the
    number of the retry being scheduled (``RetryScheduled``). ``timestamp`` is the engine
    timers' ``now()``.
    """

    type: HistoryEventType
    timestamp: float
    state: str | None = None
    error: str | None = None
    cause: str | None = None
    function_name: str | None = None
    payload: Mapping[str, Any] | None = None
    output: Any = None
    retry_count: int | None = None
    delay_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    status: ExecutionStatus
    output: Mapping[str, Any] | None = None
    error: str | None = None
    cause: str | None = None
    history: tuple[HistoryEvent, ...] = ()

    def events(self, *types: HistoryEventType) -> list[HistoryEvent]:
        """The events of the given types, in order."""
        return [event for event in self.history if event.type in types]
