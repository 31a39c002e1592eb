"""Triggers: create, list and delete them, and fire them.

A trigger belongs to a workflow and follows its ownership: whoever may see the workflow may
list its triggers, whoever may change it may add or remove them (another user's workflow
is a 404). A trigger runs as its creator: when it fires, the creator must still exist and
still hold ``WorkflowExecute`` on a workflow they can see, or the trigger stops, with the
reason in its listing. A deleted workflow takes its triggers with it.

Where a trigger fires is the backend's business: locally the in-process scheduler and
``POST /events``; on AWS an EventBridge Scheduler schedule or rule invoking the ``events``
Lambda, which calls :meth:`TriggerService.fire_delivery`. Either way the execution row is
created first, by the same ``execute`` the API uses.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from llm_orchestrator import ids
from llm_orchestrator.audit.trail import AuditTrail
from llm_orchestrator.auth.permissions import Permission, permissions_for_roles
from llm_orchestrator.auth.principal import Principal
from llm_orchestrator.errors import Conflict, FieldError, NotFound, OverBudget, ValidationFailed
from llm_orchestrator.executions.lifecycle import Actor
from llm_orchestrator.store.triggers import TriggerRecord, TriggerRepository
from llm_orchestrator.store.users import UserRepository
from llm_orchestrator.triggers.events import scheduled_event
from llm_orchestrator.triggers.inputs import input_errors, resolve_inputs
from llm_orchestrator.triggers.patterns import matches, pattern_errors
from llm_orchestrator.triggers.schedule import Rate, Schedule, ScheduleError, parse_schedule
from llm_orchestrator.workflows.service import WorkflowService

log = logging.getLogger(__name__)

TRIGGER_NOT_FOUND = "Trigger not found"
COMPLETION_SOURCE = "llm-orchestrator"
MAX_TRIGGERS_PER_WORKFLOW = 100


class ExecutionStarter(Protocol):
    """What firing needs from executions: the API's own ``execute``."""

    async def execute(
        self,
        caller: Principal,
        workflow_id: str,
        inputs: Mapping[str, Any],
        *,
        actor: Actor | None = None,
        audit_details: Mapping[str, Any] | None = None,
    ) -> Any:
        """Create and start the execution; its ``start`` audit event names ``actor`` and
        carries ``audit_details``."""
        ...


class BudgetCheck(Protocol):
    """The execute route's budget check (``Budgets`` in production)."""

    async def check_execute(self, user_id: str) -> None:
        """Raises ``OverBudget`` when ``user_id``'s monthly budget is spent."""
        ...


class TriggerBackend(Protocol):
    """Where triggers live besides PostgreSQL: nowhere locally, EventBridge on AWS."""

    @property
    def fires_in_process(self) -> bool:
        """True when this process's scheduler fires schedules (else EventBridge does)."""
        ...

    async def install(self, trigger: TriggerRecord) -> None: ...

    async def remove(self, trigger: TriggerRecord) -> None: ...


class InProcessTriggers:
    """Locally the scheduler reads ``next_fire_at`` and ``POST /events`` matches patterns
    itself: nothing to install."""

    fires_in_process = True

    async def install(self, trigger: TriggerRecord) -> None:
        return None

    async def remove(self, trigger: TriggerRecord) -> None:
        return None


@dataclass(frozen=True)
class TriggerSpec:
    type: Literal["schedule", "event"]
    schedule: str | None
    event_pattern: dict[str, Any] | None
    inputs: dict[str, Any]
    enabled: bool


@dataclass(frozen=True)
class Firing:
    """What one firing did: ``execution_id`` when it started one, else ``error``."""

    trigger_id: str
    workflow_id: str
    created_by: str | None
    execution_id: str | None = None
    error: str | None = None
    skipped: str | None = None
    """Why nothing was attempted: "duplicate" or "stopped"."""


class TriggerService:
    def __init__(
        self,
        repo: TriggerRepository,
        workflows: WorkflowService,
        users: UserRepository,
        executions: ExecutionStarter,
        *,
        backend: TriggerBackend,
        audit: AuditTrail | None,
        clock: Callable[[], datetime],
        budgets: BudgetCheck | None = None,
    ) -> None:
        """``budgets``: a firing whose creator's budget is spent starts nothing, as an
        execute request would be refused (none: budgets are not checked)."""
        self._budgets = budgets
        self._repo = repo
        self._workflows = workflows
        self._users = users
        self._executions = executions
        self._backend = backend
        self._audit = audit
        self._now = clock

    @property
    def fires_in_process(self) -> bool:
        return self._backend.fires_in_process

    # -- the API ------------------------------------------------------------------------

    async def create(self, caller: Principal, workflow_id: str, spec: TriggerSpec) -> TriggerRecord:
        workflow = await self._workflows.get(caller, workflow_id)
        schedule = _check(spec, workflow.definition.required_inputs())
        _, total = await self._repo.list_page(workflow.record.id, limit=1, offset=0)
        if total >= MAX_TRIGGERS_PER_WORKFLOW:
            raise Conflict(f"A workflow may have at most {MAX_TRIGGERS_PER_WORKFLOW} triggers")
        now = self._now()
        record = await self._repo.create(
            trigger_id=ids.trigger_id(),
            workflow_id=workflow.record.id,
            type=spec.type,
            schedule=spec.schedule,
            event_pattern=spec.event_pattern,
            inputs=spec.inputs,
            enabled=spec.enabled,
            created_by=caller.user_id,
            next_fire_at=(
                _next_tick(schedule, now, now)
                if schedule is not None and self.fires_in_process
                else None
            ),
            now=now,
        )
        try:
            await self._backend.install(record)
        except Exception:
            await self._repo.delete(record.id, workflow_id=record.workflow_id)
            raise
        return record

    async def list_page(
        self, caller: Principal, workflow_id: str, *, limit: int, offset: int
    ) -> tuple[list[TriggerRecord], int]:
        workflow = await self._workflows.get(caller, workflow_id)
        return await self._repo.list_page(workflow.record.id, limit=limit, offset=offset)

    async def delete(self, caller: Principal, workflow_id: str, trigger_id: str) -> TriggerRecord:
        workflow = await self._workflows.get(caller, workflow_id)
        record = await self._repo.get(trigger_id, workflow_id=workflow.record.id)
        if record is None:
            raise NotFound(TRIGGER_NOT_FOUND)
        # The schedule or rule first: a row deleted before it would leave it firing (the
        # events handler would then find no row and remove it, but only on its next tick).
        await self._backend.remove(record)
        await self._repo.delete(record.id, workflow_id=record.workflow_id)
        return record

    async def dispatch(
        self, event: Mapping[str, Any], live: list[TriggerRecord] | None = None
    ) -> list[Firing]:
        """Fire every live event trigger whose pattern matches ``event`` (an envelope);
        ``live``: those triggers, when a statement that ran anyway read them already."""
        firings: list[Firing] = []
        if live is None:
            live = await self._repo.live_event_triggers()
        for trigger in live:
            assert trigger.event_pattern is not None
            if _own_completion(trigger, event) or not matches(trigger.event_pattern, event):
                continue
            firings.append(await self.fire(trigger, event, fire_key=str(event.get("id"))))
        return firings

    # -- firing -------------------------------------------------------------------------

    async def fire_due_schedules(self, now: datetime) -> list[Firing]:
        """Fire each schedule whose tick is due (the local scheduler's one pass).

        A tick missed while no server ran fires once, late, then the schedule moves to its
        next future tick: downtime never causes a burst of executions.
        """
        firings: list[Firing] = []
        for trigger in await self._repo.due_schedules(now):
            assert trigger.schedule is not None and trigger.next_fire_at is not None
            following = _next_tick(parse_schedule(trigger.schedule), now, trigger.created_at)
            due = trigger.next_fire_at
            if not await self._repo.claim_tick(trigger.id, due=due, following=following):
                continue
            event = scheduled_event(trigger.id, due, f"{trigger.id}@{due.isoformat()}")
            firings.append(await self.fire(trigger, event, fire_key=None))
        return firings

    async def next_due_at(self) -> datetime | None:
        return await self._repo.next_due_at()

    async def fire_delivery(
        self, trigger_id: str, event: Mapping[str, Any], *, fire_key: str | None
    ) -> Firing | None:
        """A delivery from EventBridge (the ``events`` Lambda). None when the trigger is
        gone (its workflow was deleted, or it was removed): its schedule or rule is
        removed so it stops calling."""
        trigger = await self._repo.get(trigger_id)
        if trigger is None:
            await self._backend.remove(_orphan(trigger_id))
            return None
        if not trigger.enabled or trigger.status != "active":
            return Firing(
                trigger.id, str(trigger.workflow_id), trigger.created_by, skipped="stopped"
            )
        return await self.fire(trigger, event, fire_key=fire_key)

    async def fire(
        self, trigger: TriggerRecord, event: Mapping[str, Any], *, fire_key: str | None
    ) -> Firing:
        workflow_id = str(trigger.workflow_id)
        if fire_key is not None and not await self._repo.claim_delivery(trigger.id, fire_key):
            return Firing(trigger.id, workflow_id, trigger.created_by, skipped="duplicate")
        creator, reason = await self._creator(trigger)
        if creator is None:
            return await self._stop(trigger, reason)
        try:
            if self._budgets is not None:
                # Refused like ``POST /execute`` would be: no execution row, the reason in
                # the trigger's ``last_error``, and the trigger keeps firing (the budget may
                # be raised, and resets next month).
                await self._budgets.check_execute(creator.user_id)
            record = await self._executions.execute(
                creator,
                workflow_id,
                resolve_inputs(trigger.inputs, event),
                actor=Actor(user_id=trigger.created_by),
                audit_details={"trigger_id": trigger.id},
            )
        except NotFound:
            return await self._stop(
                trigger, "the workflow no longer exists or its creator can no longer see it"
            )
        except (ValidationFailed, Conflict, OverBudget) as exc:
            await self._repo.record_fire(
                trigger.id, now=self._now(), execution_id=None, error=exc.message
            )
            await self._audit_fire(trigger, exc.message, reason=exc.details.get("reason"))
            return Firing(trigger.id, workflow_id, trigger.created_by, error=exc.message)
        await self._repo.record_fire(
            trigger.id, now=self._now(), execution_id=record.id, error=None
        )
        return Firing(trigger.id, workflow_id, trigger.created_by, execution_id=record.id)

    async def _creator(self, trigger: TriggerRecord) -> tuple[Principal | None, str]:
        user = await self._users.get(trigger.created_by) if trigger.created_by else None
        if user is None:
            return None, "the trigger's creator no longer exists"
        permissions = permissions_for_roles(user.roles)
        if Permission.WORKFLOW_EXECUTE not in permissions:
            return None, (
                f"the trigger's creator '{user.username}' no longer has"
                f" {Permission.WORKFLOW_EXECUTE.value}"
            )
        return (
            Principal(
                user_id=user.id,
                username=user.username,
                roles=user.roles,
                tier=user.tier,
                permissions=permissions,
                via="trigger",
            ),
            "",
        )

    async def _stop(self, trigger: TriggerRecord, reason: str) -> Firing:
        log.warning("trigger %s stopped: %s", trigger.id, reason)
        await self._repo.stop(trigger.id, reason)
        try:
            await self._backend.remove(trigger)
        except Exception:
            # Stopped in PostgreSQL either way: a later delivery is refused as stopped.
            log.exception("could not remove the schedule or rule of trigger %s", trigger.id)
        await self._audit_fire(trigger, reason)
        return Firing(trigger.id, str(trigger.workflow_id), trigger.created_by, skipped="stopped")

    async def _audit_fire(
        self, trigger: TriggerRecord, error: str, *, reason: str | None = None
    ) -> None:
        """A firing that started no execution (a started one is audited by the lifecycle)."""
        if self._audit is None:
            return
        extra = {"reason": reason} if reason else {}
        await self._audit.record(
            event_type="workflow_execution",
            action="start",
            result="failure",
            user_id=trigger.created_by,
            resource_type="trigger",
            resource_id=trigger.id,
            details={
                "workflow_id": str(trigger.workflow_id),
                "trigger_id": trigger.id,
                "error": error,
                **extra,
            },
        )


def _check(spec: TriggerSpec, required_inputs: list[str]) -> Schedule | None:
    errors: list[FieldError] = []
    schedule: Schedule | None = None
    if spec.type == "schedule":
        if spec.event_pattern is not None:
            errors.append(FieldError("event_pattern", "only an event trigger has a pattern"))
        if spec.schedule is None:
            errors.append(FieldError("schedule", "a schedule trigger needs 'schedule'"))
        else:
            try:
                schedule = parse_schedule(spec.schedule)
            except ScheduleError as exc:
                errors.append(FieldError("schedule", str(exc)))
    else:
        if spec.schedule is not None:
            errors.append(FieldError("schedule", "only a schedule trigger has a schedule"))
        if spec.event_pattern is None:
            errors.append(FieldError("event_pattern", "an event trigger needs 'event_pattern'"))
        else:
            errors.extend(FieldError(e.path, e.message) for e in pattern_errors(spec.event_pattern))
    errors.extend(input_errors(spec.inputs))
    errors.extend(
        FieldError(f"inputs.{name}", f"the workflow requires input '{name}'")
        for name in required_inputs
        if name not in spec.inputs
    )
    if errors:
        raise ValidationFailed("Invalid trigger", errors)
    return schedule


def _next_tick(schedule: Schedule, after: datetime, anchor: datetime) -> datetime | None:
    if isinstance(schedule, Rate):
        return schedule.next_after(after, anchor)
    return schedule.next_after(after)


def _own_completion(trigger: TriggerRecord, event: Mapping[str, Any]) -> bool:
    """A workflow's own completion never re-triggers it (that would loop for ever)."""
    detail = event.get("detail")
    return (
        event.get("source") == COMPLETION_SOURCE
        and isinstance(detail, Mapping)
        and detail.get("workflow_id") == str(trigger.workflow_id)
    )


def _orphan(trigger_id: str) -> TriggerRecord:
    """Enough of a trigger that is gone from PostgreSQL for the backend to remove it."""
    return TriggerRecord(
        id=trigger_id,
        workflow_id=uuid.UUID(int=0),
        type="schedule",
        schedule=None,
        event_pattern=None,
        inputs={},
        enabled=False,
        status="stopped",
        status_reason=None,
        created_by=None,
        created_at=datetime.min,
        next_fire_at=None,
        last_fired_at=None,
        last_execution_id=None,
        last_error=None,
    )


__all__ = [
    "COMPLETION_SOURCE",
    "BudgetCheck",
    "ExecutionStarter",
    "Firing",
    "InProcessTriggers",
    "TriggerBackend",
    "TriggerService",
    "TriggerSpec",
]
