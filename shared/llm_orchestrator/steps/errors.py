"""Errors the step runner raises on purpose.

Their class names are ASL error names (see :mod:`llm_orchestrator.executions.errors`, where
the three that steer an execution live): any name but ``WorkflowPaused`` and
``WorkflowCancelled`` goes to the step's failure handling.
"""

from __future__ import annotations

from llm_orchestrator.executions.errors import ExecutionEnded, WorkflowCancelled, WorkflowPaused

__all__ = [
    "ExecutionEnded",
    "ExecutionNotFound",
    "StepConfigurationError",
    "WorkflowCancelled",
    "WorkflowPaused",
]


class StepConfigurationError(Exception):
    """The step cannot run in this build or with this data (permanent, never retried)."""


class ExecutionNotFound(Exception):
    """The payload names an execution or a step that does not exist."""


class BudgetExhausted(StepConfigurationError):
    """The execution owner's monthly budget is spent: the step calls no provider and the
    execution fails (permanent until the budget resets or is raised)."""
