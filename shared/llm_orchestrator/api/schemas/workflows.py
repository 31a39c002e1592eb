"""Workflow responses. Requests are validated by ``workflows.parse_definition`` so that every
problem is reported with a field path, graph rules included."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from llm_orchestrator.api.schemas.common import PageMeta

if TYPE_CHECKING:
    from llm_orchestrator.store.workflows import WorkflowRecord
    from llm_orchestrator.workflows.service import Workflow


class WorkflowPublic(BaseModel):
    id: uuid.UUID
    name: str
    version: str
    description: str | None
    steps: list[dict[str, Any]]
    timeout_seconds: int
    inputs: list[str]
    created_at: datetime
    updated_at: datetime
    created_by: str

    @classmethod
    def of(cls, workflow: Workflow) -> WorkflowPublic:
        record = workflow.record
        return cls(
            id=record.id,
            name=record.name,
            version=record.version,
            description=record.description,
            steps=list(record.definition["steps"]),
            timeout_seconds=record.timeout_seconds,
            inputs=workflow.definition.required_inputs(),
            created_at=record.created_at,
            updated_at=record.updated_at,
            created_by=record.owner_id,
        )


class WorkflowSummary(BaseModel):
    id: uuid.UUID
    name: str
    version: str
    description: str | None
    created_at: datetime
    updated_at: datetime
    created_by: str

    @classmethod
    def of(cls, record: WorkflowRecord) -> WorkflowSummary:
        return cls(
            id=record.id,
            name=record.name,
            version=record.version,
            description=record.description,
            created_at=record.created_at,
            updated_at=record.updated_at,
            created_by=record.owner_id,
        )


class WorkflowList(PageMeta):
    workflows: list[WorkflowSummary]


class StateMachine(BaseModel):
    definition: dict[str, Any]
