"""Triggers (POST/GET /workflows/{workflowId}/triggers, DELETE …/triggers/{triggerId}) and
POST /events, which fires the event triggers whose patterns match."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from llm_orchestrator.api.audit_log import AuditDep
from llm_orchestrator.api.deps import RuntimeDep, require
from llm_orchestrator.api.pagination import Page
from llm_orchestrator.api.schemas.common import ERROR_RESPONSES
from llm_orchestrator.api.schemas.triggers import (
    CreateTriggerRequest,
    PutEventRequest,
    PutEventResponse,
    TriggerList,
    TriggerPublic,
)
from llm_orchestrator.auth.permissions import Permission
from llm_orchestrator.auth.principal import Principal
from llm_orchestrator.clock import utcnow
from llm_orchestrator.errors import FieldError, ValidationFailed
from llm_orchestrator.triggers.events import envelope

router = APIRouter(prefix="/workflows", tags=["triggers"], responses=ERROR_RESPONSES)
events_router = APIRouter(prefix="/events", tags=["triggers"], responses=ERROR_RESPONSES)

Reader = Annotated[Principal, Depends(require(Permission.WORKFLOW_READ))]
Writer = Annotated[Principal, Depends(require(Permission.WORKFLOW_WRITE))]
Executor = Annotated[Principal, Depends(require(Permission.WORKFLOW_EXECUTE))]
RESERVED_SOURCE_PREFIX = "aws."


@router.post(
    "/{workflow_id}/triggers", status_code=status.HTTP_201_CREATED, response_model=TriggerPublic
)
async def create_trigger(
    workflow_id: str,
    body: CreateTriggerRequest,
    audit: AuditDep,
    runtime: RuntimeDep,
    caller: Writer,
) -> TriggerPublic:
    record = await runtime.triggers.create(caller, workflow_id, body.spec())
    await audit(
        "workflow_management",
        "Create trigger",
        resource_type="trigger",
        resource_id=record.id,
        details={"workflow_id": str(record.workflow_id), "type": record.type},
    )
    return TriggerPublic.of(record)


@router.get("/{workflow_id}/triggers", response_model=TriggerList)
async def list_triggers(
    workflow_id: str, runtime: RuntimeDep, caller: Reader, page: Page
) -> TriggerList:
    records, total = await runtime.triggers.list_page(
        caller, workflow_id, limit=page.limit, offset=page.offset
    )
    return TriggerList(
        triggers=[TriggerPublic.of(r) for r in records],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.delete("/{workflow_id}/triggers/{trigger_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_trigger(
    workflow_id: str, trigger_id: str, audit: AuditDep, runtime: RuntimeDep, caller: Writer
) -> Response:
    record = await runtime.triggers.delete(caller, workflow_id, trigger_id)
    await audit(
        "workflow_management",
        "Delete trigger",
        resource_type="trigger",
        resource_id=record.id,
        details={"workflow_id": str(record.workflow_id)},
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@events_router.post("", response_model=PutEventResponse)
async def put_event(
    body: PutEventRequest, runtime: RuntimeDep, caller: Executor
) -> PutEventResponse:
    """Fire every live event trigger whose pattern matches, as EventBridge would."""
    if body.source.startswith(RESERVED_SOURCE_PREFIX):
        raise ValidationFailed(
            "Invalid event",
            [FieldError("source", f"sources starting with '{RESERVED_SOURCE_PREFIX}' are AWS's")],
        )
    event = envelope(
        source=body.source,
        detail_type=body.detail_type,
        detail=body.detail,
        resources=body.resources,
        now=utcnow(),
    )
    firings = await runtime.triggers.dispatch(event)
    visible = None if caller.is_admin else {caller.user_id}
    return PutEventResponse.of(event["id"], firings, visible)
