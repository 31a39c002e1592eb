"""Workflow definitions: POST/GET /workflows, GET/PUT/DELETE /workflows/{workflowId}, and
GET /workflows/{workflowId}/state-machine (the compiled Amazon States Language)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response, status
from pydantic import WithJsonSchema

from llm_orchestrator.api.audit_log import AuditDep
from llm_orchestrator.api.deps import RuntimeDep, carried, require
from llm_orchestrator.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET, Page
from llm_orchestrator.api.schemas.common import ERROR_RESPONSES
from llm_orchestrator.api.schemas.workflows import (
    StateMachine,
    WorkflowList,
    WorkflowPublic,
    WorkflowSummary,
)
from llm_orchestrator.auth.permissions import Permission
from llm_orchestrator.auth.principal import Principal

if TYPE_CHECKING:
    from llm_orchestrator.runtime import Runtime
    from llm_orchestrator.store.db import Read
    from llm_orchestrator.store.workflows import WorkflowHeader

router = APIRouter(prefix="/workflows", tags=["workflows"], responses=ERROR_RESPONSES)

Reader = Annotated[Principal, Depends(require(Permission.WORKFLOW_READ))]


def _list_read(
    request: Request, runtime: Runtime, owner_filter: str | None
) -> Read[tuple[list[WorkflowHeader], int] | None] | None:
    """The page ``list_workflows`` is about to read, from the raw query (the route's
    parameters are validated only after the caller is authenticated); None for a query
    that is not plainly well-formed, which FastAPI will answer or the route read itself."""
    query = request.query_params
    limit, offset = query.get("limit", str(DEFAULT_LIMIT)), query.get("offset", "0")
    if not (limit.isascii() and limit.isdigit() and offset.isascii() and offset.isdigit()):
        return None
    if not 1 <= int(limit) <= MAX_LIMIT or int(offset) > MAX_OFFSET:
        return None
    return runtime.workflows.list_read(
        owner_filter,
        name=query.get("name"),
        version=query.get("version"),
        limit=int(limit),
        offset=int(offset),
    )


# Authenticating goes with the page read: one round trip for the whole request.
ListReader = Annotated[Principal, Depends(require(Permission.WORKFLOW_READ, ride=_list_read))]
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
    request: Request,
    runtime: RuntimeDep,
    caller: ListReader,
    page: Page,
    name: Annotated[str | None, Query(max_length=128, description="Partial match")] = None,
    version: Annotated[str | None, Query(max_length=32)] = None,
) -> WorkflowList:
    read = runtime.workflows.list_read(
        caller.owner_filter(), name=name, version=version, limit=page.limit, offset=page.offset
    )
    answer = carried(request, read)
    if answer is not None and answer[0] is not None:
        records, total = answer[0]
    else:
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
