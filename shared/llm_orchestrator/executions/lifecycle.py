"""The one lifecycle of an execution: every transition, with its audit event, in one place.

Routers, the trigger service and both engines change an execution's status only through
:class:`ExecutionLifecycle`; each transition is one conditional statement (or transaction)
in :class:`~llm_orchestrator.store.executions.ExecutionRepository`, and the audit event
follows only the write that won, so a transition that lost a race records nothing. The
creation, the cancel and the end are written in one transaction with their audit events
(``start``; ``cancel`` and ``finish``; ``finish``): once the execution shows the new status,
its event is in the trail too (committed to the trail's outbox, which every read of the
trail links first), and neither exists without the other.

An execution's end is written once, by :meth:`ExecutionLifecycle.finish` when the engine
reports how its run ended (or by :meth:`ExecutionLifecycle.cancel`, whose answer is final at
once). Under the local engine, a run whose last step succeeds has its ``completed`` end
written by the statement that commits that step (:meth:`~ExecutionLifecycle.run_end`, with
its ``finish`` event; announced by :meth:`~ExecutionLifecycle.ended`), and ``finish`` only
when that statement could not write it. A step's failure handler (the ASL ``fail`` Task)
does not end the execution: it records why it is failing
(:meth:`~ExecutionRepository.record_failure`), and the run's end that follows keeps that
reason and makes the ending ``failed``. The end is announced once:
the ``finish`` audit event commits with the one write, and ``on_ended`` (completion
events) follows it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from llm_orchestrator.audit.trail import AuditTrail, Result
from llm_orchestrator.executions.errors import cancelled_error
from llm_orchestrator.executions.status import ExecutionStatus
from llm_orchestrator.store.checkpoints import CheckpointRecord
from llm_orchestrator.store.executions import (
    ExecutionRecord,
    ExecutionRepository,
    ExecutionSummary,
    ended_record,
)
from llm_orchestrator.store.step_runs import RunEnd, RunEnded

if TYPE_CHECKING:
    from llm_orchestrator.store.db import Connection
    from llm_orchestrator.store.triggers import TriggerRecord

EVENT_TYPE = "workflow_execution"

OnEnded = Callable[[ExecutionRecord, "list[TriggerRecord] | None"], Awaitable[None]]
"""Told about every execution that has ended (completion events), with the live event
triggers when the statement that wrote the end read them (see ``live_triggers_at_end``)."""


@dataclass(frozen=True)
class Actor:
    """Who asked for a transition, as its audit event records it."""

    user_id: str | None = None
    ip_address: str | None = None
    request_id: str | None = None
    """The HTTP request's id, when a request asked."""


SYSTEM = Actor()
"""The platform itself (a run ending, a recovery): the event names the execution's owner."""


class ExecutionLifecycle:
    def __init__(
        self,
        repo: ExecutionRepository,
        *,
        clock: Callable[[], datetime],
        audit: AuditTrail | None = None,
        on_ended: OnEnded | None = None,
    ) -> None:
        self._repo = repo
        self._now = clock
        self._audit = audit
        self.on_ended = on_ended
        """Told about every execution whose end this lifecycle wrote."""
        self.live_triggers_at_end: Callable[[], bool] = lambda: False
        """Whether ``on_ended`` matches the event triggers itself: then the statement that
        writes an end reads them too (one round trip less per execution)."""

    async def create(
        self,
        actor: Actor,
        *,
        details: Mapping[str, Any] | None = None,
        execution_id: str,
        workflow_id: uuid.UUID,
        owner_id: str,
        inputs: dict[str, Any],
        definition: dict[str, Any],
        state_machine: dict[str, Any],
        timeout_seconds: int,
    ) -> ExecutionRecord:
        """A new execution (pending, its run not started yet) with its ``start`` event, in
        one transaction that locks nothing shared; the event is linked into the audit
        chain after the commit."""

        def insert(
            conn: Connection | None = None, event: tuple[str, dict[str, Any]] | None = None
        ) -> Awaitable[ExecutionRecord]:
            return self._repo.create(
                execution_id=execution_id,
                workflow_id=workflow_id,
                owner_id=owner_id,
                inputs=inputs,
                definition=definition,
                state_machine=state_machine,
                timeout_seconds=timeout_seconds,
                now=self._now(),
                conn=conn,
                event=event,
            )

        if self._audit is None:
            return await insert()
        event = await self._audit.outbox_write(
            prefix="audit_",
            **self._event(
                actor,
                "start",
                owner_id=owner_id,
                execution_id=execution_id,
                workflow_id=workflow_id,
                timeout_seconds=timeout_seconds,
                **(details or {}),
            ),
        )
        if event is not None:
            # One statement writes both (the event to the outbox): no transaction around it.
            record = await insert(event=event)
            await self._audit.link_pending()
            return record
        async with self._repo.transaction() as conn:
            record = await insert(conn)
            await self._record(
                actor,
                "start",
                record,
                conn=conn,
                timeout_seconds=record.timeout_seconds,
                **(details or {}),
            )
        await self._audit.link_pending()
        return record

    async def running(self, execution_id: str) -> None:
        """A run has begun: pending becomes running (a paused one stays paused).

        The Step Functions engines say so when the state machine has started; under the
        local engine the first step's begin does it in its own statement instead
        (:meth:`~llm_orchestrator.store.step_runs.StepRunRepository.begin_step`)."""
        await self._repo.mark_running(execution_id)

    async def pause(self, execution_id: str, actor: Actor) -> ExecutionRecord | None:
        """Active and not paused → paused; None when the execution is in no such status."""
        record = await self._repo.request_pause(execution_id)
        if record is not None:
            await self._record(actor, "pause", record, status=record.status)
        return record

    async def resume(
        self, execution_id: str, actor: Actor
    ) -> tuple[ExecutionRecord | None, list[str]]:
        """paused → running; returns the execution (None if it was not paused) and the
        task tokens of its parked steps, which the engine must release."""
        record, tokens = await self._repo.request_resume(execution_id)
        if record is not None:
            await self._record(actor, "resume", record, status=record.status)
        return record, tokens

    async def cancel(
        self, execution_id: str, actor: Actor
    ) -> tuple[ExecutionRecord | None, list[str]]:
        """Active → cancelled, which ends the execution at once; returns it (None if it was
        not active) and the task tokens of its parked steps, which the engine must fail.
        The run that is stopped afterwards finds the execution ended and writes nothing.
        The ``cancel`` and ``finish`` events commit with the change."""
        async with self._repo.transaction() as conn:
            record, tokens = await self._repo.request_cancel(
                execution_id, error=cancelled_error(), now=self._now(), conn=conn
            )
            if record is not None:
                await self._record(actor, "cancel", record, conn=conn, status=record.status)
                await self._record_end(record, conn)
        if record is not None:
            await self._linked()
            await self._announce(record)
        return record, tokens

    async def restore(
        self, execution_id: str, checkpoint: CheckpointRecord, actor: Actor
    ) -> ExecutionRecord | None:
        """Back to the checkpoint's state as a new pending run (the engine starts it); None
        while the execution is still pending or running."""
        record = await self._repo.restore(execution_id, checkpoint)
        if record is not None:
            await self._record(
                actor, "restore", record, status=record.status, checkpoint_id=checkpoint.id
            )
        return record

    async def finish(
        self,
        execution_id: str,
        status: ExecutionStatus,
        *,
        error: dict[str, Any] | None = None,
        execution: ExecutionSummary | None = None,
    ) -> ExecutionRecord | None:
        """The engine's report of how the run ended: the one write of the execution's end.

        A failure recorded by a step's failure handler wins over the run's own account
        (the state machine's Fail says only ``StepFailed``). None, and nothing announced,
        when the execution has ended already (a cancel wrote its end first). ``execution``
        (as the engine started it: its owner and workflow, which never change) lets the end
        and its ``finish`` event be written by one statement.
        """
        events = None if execution is None else await self._end_events(execution, status)
        live: list[TriggerRecord] | None = None
        if events is not None:
            # One statement writes the end and its event (to the outbox).
            ended, live = await self._repo.finish_recorded(
                execution_id,
                status,
                error=error,
                now=self._now(),
                events=events,
                live_triggers=self.on_ended is not None and self.live_triggers_at_end(),
                pinned=execution if isinstance(execution, ExecutionRecord) else None,
            )
        else:
            async with self._repo.transaction() as conn:
                ended = await self._repo.finish(
                    execution_id, status, error=error, now=self._now(), conn=conn
                )
                if ended is not None:
                    await self._record_end(ended, conn)
        if ended is not None:
            await self._linked()
            await self._announce(ended, live)
        return ended

    async def run_end(self, execution: ExecutionSummary) -> RunEnd | None:
        """The execution's end as the statement committing its run's last step writes it
        (``StepRunRepository.complete_and_end``): ``completed``, with its ``finish`` event
        (and the live event triggers, as :meth:`finish` reads them). None when the audit
        trail cannot take the event in that statement: :meth:`finish` then writes the end.
        Whatever that statement wrote is announced by :meth:`ended`."""
        event = None
        if self._audit is not None:
            event = await self._finish_event(execution, ExecutionStatus.COMPLETED, prefix="f_")
            if event is None:
                return None
        return RunEnd(
            now=self._now(),
            event=event,
            live_triggers=self.on_ended is not None and self.live_triggers_at_end(),
        )

    async def ended(self, execution: ExecutionRecord, ended: RunEnded) -> ExecutionRecord:
        """After the commit of an end :meth:`run_end` gave: its event linked into the
        chain and the end announced, as :meth:`finish` does after its own write.
        ``execution``: as the engine started it (its definition and state machine)."""
        record = ended_record(ended.row, execution)
        await self._linked()
        await self._announce(record, ended.triggers)
        return record

    async def _end_events(
        self, execution: ExecutionSummary, status: ExecutionStatus
    ) -> dict[ExecutionStatus, tuple[str, dict[str, Any]]] | None:
        """The ``finish`` event :meth:`_record_end` writes, for each status the end may
        have (``status``, or ``failed`` after a recorded failure), as outbox inserts; None
        when the trail does not take events that way."""
        if self._audit is None:
            return None
        events: dict[ExecutionStatus, tuple[str, dict[str, Any]]] = {}
        for number, ending in enumerate(dict.fromkeys((status, ExecutionStatus.FAILED))):
            event = await self._finish_event(execution, ending, prefix=f"audit{number}_")
            if event is None:
                return None
            events[ending] = event
        return events

    async def _finish_event(
        self, execution: ExecutionSummary, status: ExecutionStatus, *, prefix: str
    ) -> tuple[str, dict[str, Any]] | None:
        """The ``finish`` event of an end with ``status``, as an outbox insert whose
        parameters are named with ``prefix`` (``AuditTrail.outbox_write``)."""
        assert self._audit is not None
        return await self._audit.outbox_write(
            prefix=prefix,
            **self._event(
                Actor(user_id=execution.owner_id),
                "finish",
                owner_id=execution.owner_id,
                execution_id=execution.id,
                workflow_id=execution.workflow_id,
                result="success" if status == ExecutionStatus.COMPLETED else "failure",
                status=status,
            ),
        )

    async def _record_end(self, record: ExecutionRecord, conn: Connection) -> None:
        """The ``finish`` event, in the transaction that wrote the end."""
        await self._record(
            Actor(user_id=record.owner_id),
            "finish",
            record,
            conn=conn,
            result="success" if record.status == ExecutionStatus.COMPLETED else "failure",
            status=record.status,
        )

    async def _linked(self) -> None:
        """After a commit that recorded audit events: they are linked into the chain."""
        if self._audit is not None:
            await self._audit.link_pending()

    async def _announce(
        self, record: ExecutionRecord, live: list[TriggerRecord] | None = None
    ) -> None:
        """After the end has committed: completion events."""
        if self.on_ended is not None:
            await self.on_ended(record, live)

    async def _record(
        self,
        actor: Actor,
        action: str,
        record: ExecutionRecord,
        *,
        result: Result = "success",
        conn: Connection | None = None,
        **details: Any,
    ) -> None:
        if self._audit is None:
            return
        await self._audit.record(
            **self._event(
                actor,
                action,
                owner_id=record.owner_id,
                execution_id=record.id,
                workflow_id=record.workflow_id,
                result=result,
                **details,
            ),
            conn=conn,
        )

    @staticmethod
    def _event(
        actor: Actor,
        action: str,
        *,
        owner_id: str,
        execution_id: str,
        workflow_id: uuid.UUID,
        result: Result = "success",
        **details: Any,
    ) -> dict[str, Any]:
        """The audit event of a transition of this execution, as ``AuditTrail.record``
        takes it."""
        request = {"request_id": actor.request_id} if actor.request_id is not None else {}
        return {
            "event_type": EVENT_TYPE,
            "action": action,
            "result": result,
            "user_id": actor.user_id or owner_id,
            "resource_type": "execution",
            "resource_id": execution_id,
            "ip_address": actor.ip_address,
            "details": {**request, "workflow_id": str(workflow_id), **details},
        }
