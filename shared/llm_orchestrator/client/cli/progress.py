"""``llmo run``: each step's status live while the execution runs, then its outputs.

On a terminal the step table redraws in place (``rich.live``); otherwise (CI logs, pipes)
each change is one line, so a log shows the same story.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.live import Live
from rich.table import Table

from llm_orchestrator.client import Client, Execution, ExecutionAccepted, WaitTimeout, Workflow
from llm_orchestrator.client.cli.output import Output
from llm_orchestrator.client.models import StepState
from llm_orchestrator.executions.status import ExecutionStatus, StepStatus

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
STYLES: dict[str, str] = {
    ExecutionStatus.PENDING: "dim",
    ExecutionStatus.RUNNING: "yellow",
    ExecutionStatus.PAUSED: "magenta",
    ExecutionStatus.COMPLETED: "green",
    ExecutionStatus.FAILED: "red",
    ExecutionStatus.CANCELLED: "red",
    ExecutionStatus.TIMED_OUT: "red",
}
"""Keyed by execution status; a step's statuses are the same words (``StepStatus``)."""


def exit_code(execution: Execution) -> int:
    return EXIT_OK if execution.status == ExecutionStatus.COMPLETED else EXIT_FAILED


def _latency(step: StepState) -> str:
    if step.latency_ms is None:
        return "-"
    return (
        f"{step.latency_ms:.0f} ms"
        if step.latency_ms < 10_000
        else f"{step.latency_ms / 1000:.1f} s"
    )


def _tokens(step: StepState) -> str:
    if step.input_tokens is None and step.output_tokens is None:
        return "-"
    return f"{step.input_tokens or 0} in / {step.output_tokens or 0} out"


def step_table(execution: Execution, step_types: dict[str, str]) -> Table:
    """One row per step; the ``type`` column only when the caller knows the types (an
    execution's status does not carry them: a column of dashes would say nothing)."""
    style = STYLES.get(execution.status, "")
    table = Table(title=f"{execution.id}  [{style}]{execution.status}[/]", title_justify="left")
    for column in ("step", "type", "status", "latency", "tokens"):
        if column != "type" or step_types:
            table.add_column(column)
    for step_id, step in execution.steps.items():
        kind = [step_types.get(step_id, "-")] if step_types else []
        table.add_row(
            step_id,
            *kind,
            f"[{STYLES.get(step.status, '')}]{step.status}[/]",
            _latency(step),
            _tokens(step),
        )
    return table


def render_execution(
    out: Output, execution: Execution, step_types: dict[str, str] | None = None
) -> None:
    out.console.print(step_table(execution, step_types or {}))
    _print_ending(out, execution)


def _print_ending(out: Output, execution: Execution) -> None:
    if execution.status == ExecutionStatus.COMPLETED:
        out.console.print("Outputs:", style="bold")
        out.console.print_json(data=execution.outputs)
    elif execution.error:
        error = execution.error
        step = f" in step {error['step_id']}" if error.get("step_id") else ""
        out.console.print(
            f"{execution.status}{step}: {error.get('type', 'Error')}: {error.get('message', '')}",
            style=STYLES.get(execution.status, ""),
            markup=False,
        )


class _LineReporter:
    """One line per step (and execution) status change, for logs and pipes."""

    def __init__(self, out: Output, step_types: dict[str, str]) -> None:
        self._out = out
        self._types = step_types
        self._seen: dict[str, str] = {}

    def __call__(self, execution: Execution) -> None:
        # An execution that starts (or resumes) says so before its steps do, and one that
        # ends says so after them: the lines read in the order things happened.
        if not execution.is_terminal:
            self._execution_line(execution)
        for step_id, step in execution.steps.items():
            if self._seen.get(step_id) == step.status:
                continue
            self._seen[step_id] = step.status
            if step.status == StepStatus.PENDING:
                continue
            detail = ""
            if step.status in (StepStatus.COMPLETED, StepStatus.FAILED):
                detail = f"  {_latency(step)}  {_tokens(step)}"
            kind = self._types.get(step_id, "")
            self._out.console.print(f"  {step_id} ({kind}): {step.status}{detail}", markup=False)
        self._execution_line(execution)

    def _execution_line(self, execution: Execution) -> None:
        if self._seen.get("") != execution.status:
            self._seen[""] = execution.status
            self._out.console.print(f"execution {execution.id}: {execution.status}", markup=False)


def follow(
    client: Client,
    workflow: Workflow,
    accepted: ExecutionAccepted,
    out: Output,
    *,
    timeout: float | None,
) -> int:
    step_types = {str(s.get("id")): str(s.get("type", "")) for s in workflow.steps}
    try:
        execution = _wait(client, workflow, accepted, out, step_types, timeout)
    except KeyboardInterrupt:
        return _interrupted(client, accepted, out)
    except WaitTimeout as exc:
        out.note(
            f"llmo: {exc.message}; it keeps running: llmo executions status {accepted.execution_id}"
        )
        return EXIT_FAILED
    if out.as_json:
        out.json(execution.model_dump(mode="json"))
    else:
        _print_ending(out, execution)
    return exit_code(execution)


def _wait(
    client: Client,
    workflow: Workflow,
    accepted: ExecutionAccepted,
    out: Output,
    step_types: dict[str, str],
    timeout: float | None,
) -> Execution:
    ids = (accepted.workflow_id, accepted.execution_id)
    if out.as_json:
        return client.executions.wait(*ids, timeout=timeout)
    out.console.print(
        f"Running {workflow.name}@{workflow.version} as {accepted.execution_id}", markup=False
    )
    if not out.console.is_terminal:
        return client.executions.wait(
            *ids, timeout=timeout, on_update=_LineReporter(out, step_types)
        )
    with Live(console=out.console, auto_refresh=False, transient=False) as live:

        def redraw(execution: Execution) -> None:
            live.update(step_table(execution, step_types), refresh=True)

        return client.executions.wait(*ids, timeout=timeout, on_update=redraw)


def _interrupted(client: Client, accepted: ExecutionAccepted, out: Output) -> int:
    ids: tuple[str, str] = (accepted.workflow_id, accepted.execution_id)
    answer: Any = ""
    if sys.stdin.isatty():
        try:
            answer = input(f"\nCancel execution {accepted.execution_id}? [y/N] ")
        except (EOFError, KeyboardInterrupt):
            answer = ""
    if str(answer).strip().lower() in ("y", "yes"):
        execution = client.executions.cancel(*ids)
        out.note(f"Cancelled: execution {execution.id} is {execution.status}")
        return EXIT_FAILED
    out.note(
        f"Execution {accepted.execution_id} keeps running:"
        f" llmo executions status {accepted.execution_id}"
    )
    return EXIT_INTERRUPTED
