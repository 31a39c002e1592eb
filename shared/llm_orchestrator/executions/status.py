"""The statuses an execution and its step runs go through: the only place they are spelled.

Pure values, imported by every layer (the store writes them, the API reports them), so this
module imports nothing.
"""

from __future__ import annotations

from enum import StrEnum


class ExecutionStatus(StrEnum):
    PENDING = "pending"
    """Created; no run has begun yet."""
    RUNNING = "running"
    PAUSED = "paused"
    """Pause requested: running steps finish, the next ones park until resume."""
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def is_active(self) -> bool:
        return self in ACTIVE

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


ACTIVE: tuple[ExecutionStatus, ...] = (
    ExecutionStatus.PENDING,
    ExecutionStatus.RUNNING,
    ExecutionStatus.PAUSED,
)
"""Statuses in which an execution still has (or will have) a run."""
UNFINISHED: tuple[ExecutionStatus, ...] = (ExecutionStatus.PENDING, ExecutionStatus.RUNNING)
"""Active and not paused: a process that starts again resumes these."""
TERMINAL: tuple[ExecutionStatus, ...] = (
    ExecutionStatus.COMPLETED,
    ExecutionStatus.FAILED,
    ExecutionStatus.CANCELLED,
    ExecutionStatus.TIMED_OUT,
)
"""Final: nothing runs, nothing is written for an execution in one of these."""


class StepStatus(StrEnum):
    PENDING = "pending"
    """Not started (reported for steps that have no run yet; never stored)."""
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
