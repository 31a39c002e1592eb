"""The engine port: what runs executions, locally (``engine.local``) or on AWS Step Functions
(``engine.stepfunctions``); the executions service depends on this, never on an engine.

Both implementations change an execution's status only through the execution lifecycle
(:mod:`llm_orchestrator.executions.lifecycle`, which also records the audit events), so an
engine only adds how a run is started, signalled and stopped, and reports how it ended.
Each transition returns the updated execution, or None when the execution is not in a
status that allows it (the caller answers 409). ``actor`` is who asked, for the audit trail.
"""

from __future__ import annotations

from typing import Protocol

from llm_orchestrator.executions.lifecycle import Actor
from llm_orchestrator.store.checkpoints import CheckpointRecord
from llm_orchestrator.store.executions import ExecutionRecord


class Engine(Protocol):
    async def start(self, execution: ExecutionRecord) -> None:
        """Begin a run of a newly created (pending) execution."""

    async def pause(self, execution_id: str, actor: Actor) -> ExecutionRecord | None:
        """Set the pause flag: steps already running finish; the next one parks."""

    async def resume(self, execution_id: str, actor: Actor) -> ExecutionRecord | None:
        """Clear the pause flag and release every parked step."""

    async def cancel(self, execution_id: str, actor: Actor) -> ExecutionRecord | None:
        """Set the cancel flag, fail parked steps and stop the run."""

    async def restore(
        self, execution_id: str, checkpoint: CheckpointRecord, actor: Actor
    ) -> ExecutionRecord | None:
        """Reset the execution to ``checkpoint`` and run it again under the same id."""

    async def wait(self, execution_id: str) -> None:
        """Return once the execution's current run has ended."""

    async def recover(self) -> list[str]:
        """Resume every execution left pending or running; returns their ids."""

    async def close(self) -> None:
        """Stop this process's runs without recording an ending (they will be recovered)."""
