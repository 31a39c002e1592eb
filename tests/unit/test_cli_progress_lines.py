"""``llmo run``'s line-per-change output (stdout not a terminal): lines in the order
things happened, whatever a status update bundles together."""

from __future__ import annotations

import pytest

from llm_orchestrator.client.cli.output import Output
from llm_orchestrator.client.cli.progress import _LineReporter
from llm_orchestrator.client.models import Execution


def _execution(status: str, **steps: str) -> Execution:
    return Execution.model_validate(
        {
            "id": "exec-1",
            "workflow_id": "wf-1",
            "status": status,
            "steps": {step: {"status": step_status} for step, step_status in steps.items()},
        }
    )


def test_an_execution_starts_before_its_steps_and_ends_after_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = _LineReporter(Output(as_json=False), {"draft": "llm", "polish": "llm"})

    # Each update changes the execution and a step at once: how the poll sees them.
    report(_execution("running", draft="running", polish="pending"))
    report(_execution("running", draft="completed", polish="running"))
    report(_execution("completed", draft="completed", polish="completed"))

    lines = capsys.readouterr().out.splitlines()
    assert [line.strip().split("  ")[0] for line in lines] == [
        "execution exec-1: running",
        "draft (llm): running",
        "draft (llm): completed",
        "polish (llm): running",
        "polish (llm): completed",
        "execution exec-1: completed",
    ]


def test_a_resumed_execution_says_so_before_the_step_it_resumes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = _LineReporter(Output(as_json=False), {"draft": "llm"})

    report(_execution("paused", draft="pending"))
    report(_execution("running", draft="running"))

    assert capsys.readouterr().out.splitlines() == [
        "execution exec-1: paused",
        "execution exec-1: running",
        "  draft (llm): running",
    ]
