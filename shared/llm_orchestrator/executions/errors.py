"""How an error is kept on an execution and on its step runs, and the errors that steer one.

The exception classes' names are ASL error names: the compiled state machine catches
``WorkflowPaused`` and ``WorkflowCancelled`` by name (``docs/asl.md``), and any other name
goes to the step's failure handling. Renaming a class changes the state machine's routing.
"""

from __future__ import annotations

from typing import Any

from llm_orchestrator.redaction import redact


class WorkflowPaused(Exception):
    """The execution is paused: the step did not run and parks until resumed."""


class WorkflowCancelled(Exception):
    """The execution is cancelled: the step did not run and the execution ends."""


class ExecutionEnded(Exception):
    """The execution has already ended: a late or duplicate delivery of one of its steps
    runs nothing (only a restore makes an ended execution run again)."""


CANCELLED_BY_USER = "the execution was cancelled"


def error_record(name: str, message: str, step_id: str | None) -> dict[str, Any]:
    """How an error is kept on a step run and on the execution (readable, no secrets)."""
    return {"type": name, "message": redact(message), "step_id": step_id}


def cancelled_error() -> dict[str, Any]:
    """The error a cancelled execution (and the steps the cancel closed) carries."""
    return error_record(WorkflowCancelled.__name__, CANCELLED_BY_USER, None)
