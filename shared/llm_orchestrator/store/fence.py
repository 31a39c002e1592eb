"""What the step store and the secrets store need of the runners (``store.runners``),
without its lease machinery: they are loaded by every Lambda, which never is a runner."""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["RUN_FENCE", "SECRET_WRITTEN_CHANNEL", "FencedOff"]

RUN_FENCE: ContextVar[int | None] = ContextVar("llmo_run_fence", default=None)
"""The runner id a run started under, set in the run's task (``engine.local``): the step
store begins and commits that run's steps only while the execution's ``runner_id`` is still
this id (``store.step_runs``). None (Step Functions, Lambda, one process without runners):
no fence."""


class FencedOff(Exception):
    """The execution belongs to another runner now (this one's lease was lost, noticed or
    not): the run must stop without writing anything more."""

    def __init__(self, execution_id: str) -> None:
        super().__init__(f"execution '{execution_id}' is run by another runner now")
        self.execution_id = execution_id


SECRET_WRITTEN_CHANNEL = "llmo_secret_written"
"""Every runner listens here: the name of a secret just written, whose cached value each
process drops (``store.secrets`` notifies in the statement that writes it)."""
