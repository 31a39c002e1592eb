"""Workflow CRUD with ownership: non-admins see and change only their own workflows, and
another user's workflow is reported as missing (404), never as forbidden."""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, TypeVar

from llm_orchestrator.auth.principal import Principal
from llm_orchestrator.errors import Conflict, NotFound
from llm_orchestrator.store.db import Read
from llm_orchestrator.store.workflows import WorkflowHeader, WorkflowRecord, WorkflowRepository
from llm_orchestrator.workflows.models import WorkflowDefinition
from llm_orchestrator.workflows.validation import parse_definition

T = TypeVar("T")
WORKFLOW_NOT_FOUND = "Workflow not found"

PARSED_DEFINITIONS_CACHED = 256


@dataclass(frozen=True)
class Workflow:
    record: WorkflowRecord
    definition: WorkflowDefinition


def parse_workflow_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError as exc:
        raise NotFound(WORKFLOW_NOT_FOUND) from exc


def _stored(definition: WorkflowDefinition) -> dict[str, Any]:
    return definition.model_dump(mode="json", exclude_none=True)


class WorkflowService:
    def __init__(
        self,
        repository: WorkflowRepository,
        *,
        compile: Callable[[WorkflowDefinition], dict[str, Any]],
        clock: Callable[[], datetime],
    ) -> None:
        """``compile``: definition → the state machine it runs as (the compiler, with this
        deployment's step runner); passed in so that workflows and the compiler, which reads
        workflow definitions, do not import each other."""
        self._repo = repository
        self._compile = compile
        self._now = clock
        self._definitions: OrderedDict[uuid.UUID, tuple[dict[str, Any], WorkflowDefinition]] = (
            OrderedDict()
        )

    async def create(self, caller: Principal, body: Any) -> Workflow:
        definition = parse_definition(body)
        record = await self._repo.create(
            workflow_id=uuid.uuid4(),
            owner_id=caller.user_id,
            name=definition.name,
            version=definition.version,
            description=definition.description,
            definition=_stored(definition),
            timeout_seconds=definition.timeout_seconds,
            now=self._now(),
        )
        return Workflow(record, definition)

    async def get(self, caller: Principal, workflow_id: str) -> Workflow:
        record = await self._repo.get(
            parse_workflow_id(workflow_id), owner_id=caller.owner_filter()
        )
        if record is None:
            raise NotFound(WORKFLOW_NOT_FOUND)
        return self._parsed(record)

    async def get_with(
        self, caller: Principal, workflow_id: str, ride: Read[T]
    ) -> tuple[Workflow | None, T]:
        """:meth:`get` (None for a workflow not found, which :meth:`get` refuses), and the
        answer of ``ride`` (a read of at most one row), in one statement. Raises
        ``NotFound`` for an id no workflow can have, before reading anything."""
        return self._parsed_with(
            await self._repo.get_with(
                parse_workflow_id(workflow_id), owner_id=caller.owner_filter(), ride=ride
            )
        )

    def get_with_read(
        self, owner_filter: str | None, workflow_id: str, ride: Read[T]
    ) -> Read[tuple[Workflow | None, T]] | None:
        """:meth:`get_with` for a caller with ``owner_filter``, as a read that can go with
        the request's authentication; None for an id no workflow can have."""
        try:
            parsed = parse_workflow_id(workflow_id)
        except NotFound:
            return None
        read = self._repo.get_with_read(parsed, owner_id=owner_filter, ride=ride)
        return read.then(self._parsed_with)

    def _parsed_with(self, found: tuple[WorkflowRecord | None, T]) -> tuple[Workflow | None, T]:
        record, answer = found
        return (None if record is None else self._parsed(record)), answer

    def _parsed(self, record: WorkflowRecord) -> Workflow:
        """The record with its definition parsed, once per stored definition: while the
        definition is unchanged (equal to the one parsed before), the earlier parse and
        the very same definition object are reused, so what is derived from that object
        downstream (its compiled state machine, the step runner's parse) is cached too."""
        cached = self._definitions.get(record.id)
        if cached is not None and cached[0] == record.definition:
            self._definitions.move_to_end(record.id)
            return Workflow(replace(record, definition=cached[0]), cached[1])
        definition = WorkflowDefinition.model_validate(record.definition)
        self._definitions[record.id] = (record.definition, definition)
        if len(self._definitions) > PARSED_DEFINITIONS_CACHED:
            self._definitions.popitem(last=False)
        return Workflow(record, definition)

    def list_read(
        self,
        owner_filter: str | None,
        *,
        name: str | None,
        version: str | None,
        limit: int,
        offset: int,
    ) -> Read[tuple[list[WorkflowHeader], int] | None]:
        """What :meth:`list` reads for a caller with ``owner_filter``, as a read that can go
        with the request's authentication (its answer None for a page past the end)."""
        return self._repo.list_read(
            owner_id=owner_filter, name=name, version=version, limit=limit, offset=offset
        )

    async def list(
        self,
        caller: Principal,
        *,
        name: str | None,
        version: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[WorkflowHeader], int]:
        return await self._repo.list(
            owner_id=caller.owner_filter(), name=name, version=version, limit=limit, offset=offset
        )

    async def update(self, caller: Principal, workflow_id: str, body: Any) -> Workflow:
        parsed_id = parse_workflow_id(workflow_id)
        # Existence first: another user's id is a 404 even when the body is invalid.
        if await self._repo.get(parsed_id, owner_id=caller.owner_filter()) is None:
            raise NotFound(WORKFLOW_NOT_FOUND)
        definition = parse_definition(body)
        record = await self._repo.update(
            parsed_id,
            owner_id=caller.owner_filter(),
            name=definition.name,
            version=definition.version,
            description=definition.description,
            definition=_stored(definition),
            timeout_seconds=definition.timeout_seconds,
            now=self._now(),
        )
        if record is None:
            raise NotFound(WORKFLOW_NOT_FOUND)
        return Workflow(record, definition)

    async def delete(self, caller: Principal, workflow_id: str) -> None:
        outcome = await self._repo.delete_if_idle(
            parse_workflow_id(workflow_id), owner_id=caller.owner_filter()
        )
        if outcome == "missing":
            raise NotFound(WORKFLOW_NOT_FOUND)
        if outcome == "busy":
            raise Conflict("Workflow has active executions; cancel them before deleting")

    async def state_machine(self, caller: Principal, workflow_id: str) -> dict[str, Any]:
        workflow = await self.get(caller, workflow_id)
        return self._compile(workflow.definition)
