"""Errors the step runner raises on purpose.

Their class names are ASL error names: the compiled state machine catches
``WorkflowPaused`` and ``WorkflowCancelled`` by name (``docs/asl.md``), and any other name
goes to the step's failure handling. Renaming a class changes the state machine's routing.
"""

from __future__ import annotations


class WorkflowPaused(Exception):
    """The execution is paused: the step did not run and parks until resumed."""


class WorkflowCancelled(Exception):
    """The execution is cancelled: the step did not run and the execution ends."""


class ExecutionEnded(Exception):
    """The execution has already ended: a late or duplicate delivery of one of its steps
    runs nothing (only a restore makes an ended execution run again)."""


class StepConfigurationError(Exception):
    """The step cannot run in this build or with this data (permanent, never retried)."""


class ExecutionNotFound(Exception):
    """The payload names an execution or a step that does not exist."""
