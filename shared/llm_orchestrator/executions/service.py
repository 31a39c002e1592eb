"""Executions as the API sees them: start one, read its state, steer it, checkpoint it.

Ownership follows workflows: a non-admin sees only their own executions, and another
user's execution (or checkpoint) is reported missing, never forbidden.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from llm_orchestrator import ids
from llm_orchestrator.auth.principal import Principal
from llm_orchestrator.compiler import compile_workflow
from llm_orchestrator.errors import Conflict, FieldError, NotFound, ValidationFailed
from llm_orchestrator.executions.lifecycle import Actor, ExecutionLifecycle
from llm_orchestrator.executions.ports import Engine
from llm_orchestrator.executions.status import ExecutionStatus, StepStatus
from llm_orchestrator.memo import IdentityCache
from llm_orchestrator.store.checkpoints import CheckpointRecord, CheckpointRepository
from llm_orchestrator.store.db import Read
from llm_orchestrator.store.executions import (
    ExecutionRecord,
    ExecutionRepository,
    ExecutionSummary,
)
from llm_orchestrator.store.step_runs import StepRunRecord, StepRunRepository
from llm_orchestrator.workflows.models import MAX_WORKFLOW_TIMEOUT_SECONDS, WorkflowDefinition
from llm_orchestrator.workflows.service import (
    WORKFLOW_NOT_FOUND,
    Workflow,
    WorkflowService,
    parse_workflow_id,
)

if TYPE_CHECKING:
    from llm_orchestrator.store.usage import BudgetRow
    from llm_orchestrator.usage.budgets import Budgets

EXECUTION_NOT_FOUND = "Execution not found"
COMPILED_CACHED = 256


@dataclass(frozen=True)
class ExecutionState:
    """An execution with its step runs, in the definition's step order."""

    record: ExecutionSummary
    step_ids: list[str]
    runs: dict[str, StepRunRecord]

    def outputs(self) -> dict[str, Any]:
        """Every completed step's outputs merged, later steps winning a shared name."""
        merged: dict[str, Any] = {}
        for step_id in self.step_ids:
            run = self.runs.get(step_id)
            if run is not None and run.status == StepStatus.COMPLETED and run.outputs:
                merged.update(run.outputs)
        return merged


class ExecutionService:
    def __init__(
        self,
        repo: ExecutionRepository,
        step_runs: StepRunRepository,
        checkpoints: CheckpointRepository,
        workflows: WorkflowService,
        engine: Engine,
        lifecycle: ExecutionLifecycle,
        *,
        step_runner_arn: str,
        vector_runner_arn: str | None = None,
        clock: Callable[[], datetime],
    ) -> None:
        self._repo = repo
        self._step_runs = step_runs
        self._checkpoints = checkpoints
        self._workflows = workflows
        self.engine = engine
        self._lifecycle = lifecycle
        self._step_runner_arn = step_runner_arn
        self._vector_runner_arn = vector_runner_arn
        self._now = clock
        self._compiled: IdentityCache[dict[str, Any], dict[int, dict[str, Any]]] = IdentityCache(
            COMPILED_CACHED
        )
        """Compiled state machines by stored definition (the very object the workflow
        service hands out while the definition is unchanged) and timeout: compiling is the
        costliest part of starting an execution, and the same machine object lets the
        local engine reuse its parse too."""
        self._required: IdentityCache[dict[str, Any], tuple[str, ...]] = IdentityCache(
            COMPILED_CACHED
        )
        """The inputs a stored definition requires, by the same key: finding them walks
        every template of every step, a tenth of a submit's CPU when done per request."""

    async def execute(
        self,
        caller: Principal,
        workflow_id: str,
        inputs: Mapping[str, Any],
        *,
        timeout_override: int | None = None,
        actor: Actor | None = None,
        audit_details: Mapping[str, Any] | None = None,
        budgets: Budgets | None = None,
        found: tuple[Workflow | None, BudgetRow | None] | None = None,
    ) -> ExecutionRecord:
        """Create the execution and start its run; ``actor`` (default: the caller) and
        ``audit_details`` go into its ``start`` audit event. With ``budgets``, the caller's
        budget is checked first (``OverBudget`` before anything else is refused), read by
        the statement that reads the workflow, or already read with it: ``found``, the
        answer of :meth:`start_read` for this caller (which went out with the request's
        authentication)."""
        if budgets is None:
            workflow = await self._workflows.get(caller, workflow_id)
        elif found is not None:
            workflow = _within_budget(*found, budgets)
        else:
            workflow = await self._workflow_within_budget(caller, workflow_id, budgets)
        _check_inputs(
            self._required.get(
                workflow.record.definition, lambda _: tuple(workflow.definition.required_inputs())
            ),
            inputs,
        )
        if timeout_override is not None and not 1 <= timeout_override <= (
            MAX_WORKFLOW_TIMEOUT_SECONDS
        ):
            raise ValidationFailed(
                "Invalid request",
                [FieldError("timeout_override", f"Must be 1..{MAX_WORKFLOW_TIMEOUT_SECONDS}")],
            )
        timeout = timeout_override or workflow.definition.timeout_seconds
        by_timeout = self._compiled.get(workflow.record.definition, _no_machines)
        state_machine = by_timeout.get(timeout)
        if state_machine is None:
            state_machine = compile_workflow(
                workflow.definition,
                step_runner_arn=self._step_runner_arn,
                vector_runner_arn=self._vector_runner_arn,
                timeout_seconds=timeout,
            )
            by_timeout[timeout] = state_machine
        record = await self._lifecycle.create(
            actor or Actor(user_id=caller.user_id),
            details=audit_details,
            execution_id=ids.execution_id(),
            workflow_id=workflow.record.id,
            owner_id=caller.user_id,
            inputs=dict(inputs),
            # Pinned: editing the workflow later never changes this execution.
            definition=workflow.record.definition,
            state_machine=state_machine,
            timeout_seconds=timeout,
        )
        await self.engine.start(record)
        return record

    def start_read(
        self, owner_filter: str | None, workflow_id: str, budgets: Budgets | None, *, user_id: str
    ) -> Read[tuple[Workflow | None, BudgetRow | None]] | None:
        """What :meth:`execute` reads first (the workflow and the caller's budget) for the
        caller ``user_id`` with ``owner_filter``, as a read that can go with the request's
        authentication; None without budgets or for an id no workflow can have."""
        if budgets is None:
            return None
        return self._workflows.get_with_read(
            owner_filter, workflow_id, budgets.execute_read(user_id)
        )

    async def _workflow_within_budget(
        self, caller: Principal, workflow_id: str, budgets: Budgets
    ) -> Workflow:
        try:
            found, row = await self._workflows.get_with(
                caller, workflow_id, budgets.execute_read(caller.user_id)
            )
        except NotFound:
            # An id no workflow can have: nothing was read, and the budget comes first.
            await budgets.check_execute(caller.user_id)
            raise
        return _within_budget(found, row, budgets)

    def state_read(
        self, owner_filter: str | None, workflow_id: str, execution_id: str
    ) -> Read[ExecutionState | None] | None:
        """What :meth:`state` reads for a caller with ``owner_filter``, as a read that can
        go with the request's authentication (None for an id no execution can have)."""
        try:
            parsed = parse_workflow_id(workflow_id)
        except NotFound:
            return None
        read = self._repo.status_read(execution_id, owner_id=owner_filter, workflow_id=parsed)
        return read.then(_found_state)

    async def state(self, caller: Principal, workflow_id: str, execution_id: str) -> ExecutionState:
        try:
            parsed = parse_workflow_id(workflow_id)
        except NotFound:
            raise NotFound(EXECUTION_NOT_FOUND) from None
        found = await self._repo.get_with_runs(
            execution_id, owner_id=caller.owner_filter(), workflow_id=parsed
        )
        if found is None:
            raise NotFound(EXECUTION_NOT_FOUND)
        return _state_of(*found)

    async def state_of(self, record: ExecutionSummary) -> ExecutionState:
        found = await self._repo.get_with_runs(record.id)
        return _state_of(*found) if found else await self._state(record)

    async def pause(
        self, caller: Principal, workflow_id: str, execution_id: str, actor: Actor
    ) -> ExecutionState:
        record = await self._execution(caller, workflow_id, execution_id)
        return await self._after(
            await self.engine.pause(record.id, actor), record, ExecutionStatus.PAUSED
        )

    async def resume(
        self, caller: Principal, workflow_id: str, execution_id: str, actor: Actor
    ) -> ExecutionState:
        record = await self._execution(caller, workflow_id, execution_id)
        return await self._after(await self.engine.resume(record.id, actor), record, "resumed")

    async def cancel(
        self, caller: Principal, workflow_id: str, execution_id: str, actor: Actor
    ) -> ExecutionState:
        record = await self._execution(caller, workflow_id, execution_id)
        return await self._after(
            await self.engine.cancel(record.id, actor), record, ExecutionStatus.CANCELLED
        )

    async def checkpoints(
        self, caller: Principal, workflow_id: str, execution_id: str, *, limit: int, offset: int
    ) -> tuple[list[CheckpointRecord], int]:
        record = await self._execution(caller, workflow_id, execution_id)
        return await self._checkpoints.list_checkpoints(record.id, limit=limit, offset=offset)

    async def create_checkpoint(
        self, caller: Principal, workflow_id: str, execution_id: str, step_id: str | None
    ) -> CheckpointRecord:
        record = await self._execution(caller, workflow_id, execution_id)
        if step_id is not None:
            known = WorkflowDefinition.model_validate(record.definition)
            if step_id not in {step.id for step in known.steps}:
                # Like an unknown execution: the named thing does not exist.
                raise NotFound(f"The workflow has no step '{step_id}'")
        return await self._checkpoints.create_checkpoint(ids.checkpoint_id(), record.id, step_id)

    async def restore(
        self, caller: Principal, workflow_id: str, checkpoint_id: str, actor: Actor
    ) -> ExecutionState:
        checkpoint = await self._checkpoints.get_checkpoint(checkpoint_id)
        if checkpoint is None:
            raise NotFound("Checkpoint not found")
        try:
            record = await self._execution(caller, workflow_id, checkpoint.execution_id)
        except NotFound:
            raise NotFound("Checkpoint not found") from None
        restored = await self.engine.restore(record.id, checkpoint, actor)
        return await self._after(restored, record, "restored; pause or cancel it first")

    async def wait(self, record: ExecutionSummary) -> ExecutionState:
        await self.engine.wait(record.id)
        return await self.state_of(record)

    async def _execution(
        self, caller: Principal, workflow_id: str, execution_id: str
    ) -> ExecutionRecord:
        try:
            parsed = parse_workflow_id(workflow_id)
        except NotFound:
            raise NotFound(EXECUTION_NOT_FOUND) from None
        record = await self._repo.get(
            execution_id, owner_id=caller.owner_filter(), workflow_id=parsed
        )
        if record is None:
            raise NotFound(EXECUTION_NOT_FOUND)
        return record

    async def _after(
        self, changed: ExecutionRecord | None, before: ExecutionRecord, verb: str
    ) -> ExecutionState:
        if changed is None:
            current = await self._repo.get(before.id)
            status = current.status if current else before.status
            raise Conflict(
                f"Execution is {status} and cannot be {verb}",
                {"execution_id": before.id, "status": status},
            )
        return await self._state(changed)

    async def _state(self, record: ExecutionSummary) -> ExecutionState:
        runs = {run.step_id: run for run in await self._step_runs.step_runs(record.id)}
        if isinstance(record, ExecutionRecord):
            step_ids = [step["id"] for step in record.definition.get("steps", [])]
        else:  # an execution gone meanwhile, known by its summary: the steps that ran
            step_ids = list(runs)
        return ExecutionState(record=record, step_ids=step_ids, runs=runs)


def _within_budget(found: Workflow | None, row: BudgetRow | None, budgets: Budgets) -> Workflow:
    """The workflow read with the caller's budget row: ``OverBudget`` first, then
    ``NotFound``."""
    budgets.check_execute_row(row)
    if found is None:
        raise NotFound(WORKFLOW_NOT_FOUND)
    return found


def _no_machines(_: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {}


def _state_of(
    record: ExecutionSummary, step_ids: list[str], runs: list[StepRunRecord]
) -> ExecutionState:
    return ExecutionState(record=record, step_ids=step_ids, runs={r.step_id: r for r in runs})


def _found_state(
    found: tuple[ExecutionSummary, list[str], list[StepRunRecord]] | None,
) -> ExecutionState | None:
    return None if found is None else _state_of(*found)


def _check_inputs(required: tuple[str, ...], inputs: Mapping[str, Any]) -> None:
    """``required``: the definition's required inputs, in order."""
    missing = [name for name in required if name not in inputs]
    if missing:
        names = ", ".join(f"'{name}'" for name in missing)
        raise ValidationFailed(
            f"Missing required input{'s' if len(missing) > 1 else ''} {names}",
            [
                FieldError(f"inputs.{name}", f"Required input '{name}' is missing")
                for name in missing
            ],
        )
