"""Workflow definitions: POST/GET /workflows, GET/PUT/DELETE /workflows/{workflowId}, and
GET /workflows/{workflowId}/state-machine (the compiled Amazon States Language)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Response, status
from pydantic import WithJsonSchema

from llm_orchestrator.api.audit_log import AuditDep
from llm_orchestrator.api.deps import RuntimeDep, require
from llm_orchestrator.api.pagination import Page
from llm_orchestrator.api.schemas.common import ERROR_RESPONSES
from llm_orchestrator.api.schemas.workflows import (
    StateMachine,
    WorkflowList,
    WorkflowPublic,
    WorkflowSummary,
)
from llm_orchestrator.auth.permissions import Permission
from llm_orchestrator.auth.principal import Principal

router = APIRouter(prefix="/workflows", tags=["workflows"], responses=ERROR_RESPONSES)

Reader = Annotated[Principal, Depends(require(Permission.WORKFLOW_READ))]
Writer = Annotated[Principal, Depends(require(Permission.WORKFLOW_WRITE))]
Deleter = Annotated[Principal, Depends(require(Permission.WORKFLOW_DELETE))]
# Validated by ``parse_definition`` (every problem at once, graph rules included); the
# document shows the definition's schema (``definition_schemas``).
DefinitionBody = Annotated[
    dict[str, Any],
    Body(),
    WithJsonSchema({"$ref": "#/components/schemas/WorkflowDefinition"}),
]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WorkflowPublic)
async def create_workflow(
    body: DefinitionBody, audit: AuditDep, runtime: RuntimeDep, caller: Writer
) -> WorkflowPublic:
    workflow = await runtime.workflows.create(caller, body)
    await audit(
        "workflow_management",
        "Create workflow",
        resource_type="workflow",
        resource_id=str(workflow.record.id),
        details={"name": workflow.record.name, "version": workflow.record.version},
    )
    return WorkflowPublic.of(workflow)


@router.get("", response_model=WorkflowList)
async def list_workflows(
    runtime: RuntimeDep,
    caller: Reader,
    page: Page,
    name: Annotated[str | None, Query(max_length=128, description="Partial match")] = None,
    version: Annotated[str | None, Query(max_length=32)] = None,
) -> WorkflowList:
    records, total = await runtime.workflows.list(
        caller, name=name, version=version, limit=page.limit, offset=page.offset
    )
    return WorkflowList(
        workflows=[WorkflowSummary.of(r) for r in records],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/{workflow_id}", response_model=WorkflowPublic)
async def get_workflow(workflow_id: str, runtime: RuntimeDep, caller: Reader) -> WorkflowPublic:
    return WorkflowPublic.of(await runtime.workflows.get(caller, workflow_id))


@router.put("/{workflow_id}", response_model=WorkflowPublic)
async def update_workflow(
    workflow_id: str, body: DefinitionBody, audit: AuditDep, runtime: RuntimeDep, caller: Writer
) -> WorkflowPublic:
    workflow = await runtime.workflows.update(caller, workflow_id, body)
    await audit(
        "workflow_management",
        "Update workflow",
        resource_type="workflow",
        resource_id=str(workflow.record.id),
        details={"name": workflow.record.name, "version": workflow.record.version},
    )
    return WorkflowPublic.of(workflow)


@router.delete("/{workflow_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_workflow(
    workflow_id: str, audit: AuditDep, runtime: RuntimeDep, caller: Deleter
) -> Response:
    await runtime.workflows.delete(caller, workflow_id)
    await audit(
        "workflow_management",
        "Delete workflow",
        resource_type="workflow",
        resource_id=workflow_id,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{workflow_id}/state-machine", response_model=StateMachine)
async def get_state_machine(workflow_id: str, runtime: RuntimeDep, caller: Reader) -> StateMachine:
    return StateMachine(definition=await runtime.workflows.state_machine(caller, workflow_id))
