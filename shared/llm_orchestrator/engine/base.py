"""The engine interface: what runs executions, locally or on AWS Step Functions.

Both implementations share the same rules for what may happen to an execution; those
rules are conditional updates in :class:`~llm_orchestrator.store.executions.ExecutionRepository`,
so an engine only adds how a run is started, signalled and stopped. Each transition
returns the updated execution, or None when the execution is not in a status that allows
it (the caller answers 409).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from llm_orchestrator.store.checkpoints import CheckpointRecord
from llm_orchestrator.store.executions import ExecutionRecord

STEP_RUNNER_FUNCTION = "step-runner"
"""The ``FunctionName`` locally compiled machines use; the local engine invokes the step
runner whatever the name, as there is only one function."""


OnEnded = Callable[[ExecutionRecord], Awaitable[None]]
"""Told about every execution this engine ends (completion events)."""


class Engine(Protocol):
    on_ended: OnEnded | None

    async def start(self, execution: ExecutionRecord) -> None:
        """Begin a run of a newly created (pending) execution."""

    async def pause(self, execution_id: str) -> ExecutionRecord | None:
        """Set the pause flag: steps already running finish; the next one parks."""

    async def resume(self, execution_id: str) -> ExecutionRecord | None:
        """Clear the pause flag and release every parked step."""

    async def cancel(self, execution_id: str) -> ExecutionRecord | None:
        """Set the cancel flag, fail parked steps and stop the run."""

    async def restore(
        self, execution_id: str, checkpoint: CheckpointRecord
    ) -> ExecutionRecord | None:
        """Reset the execution to ``checkpoint`` and run it again under the same id."""

    async def wait(self, execution_id: str) -> None:
        """Return once the execution's current run has ended."""

    async def recover(self) -> list[str]:
        """Resume every execution left pending or running; returns their ids."""

    async def close(self) -> None:
        """Stop this process's runs without recording an ending (they will be recovered)."""
