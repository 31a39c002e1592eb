"""Workflow definitions: POST/GET /workflows, GET/PUT/DELETE /workflows/{workflowId}, and
GET /workflows/{workflowId}/state-machine (the compiled Amazon States Language)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response, status
from pydantic import WithJsonSchema

from llm_orchestrator.api.audit_log import AuditDep
from llm_orchestrator.api.deps import RuntimeDep, carried, get_runtime, require
from llm_orchestrator.api.fast_path import (
    FastPathRoute,
    JsonBody,
    fast_path,
    once_per_request,
    plain_int,
    plain_query,
)
from llm_orchestrator.api.pagination import DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET, Page
from llm_orchestrator.api.schemas.common import ERROR_RESPONSES
from llm_orchestrator.api.schemas.plain_json import workflow_list_json
from llm_orchestrator.api.schemas.workflows import (
    StateMachine,
    WorkflowList,
    WorkflowPublic,
    WorkflowSummary,
)
from llm_orchestrator.api.storable import reject_unstorable_input
from llm_orchestrator.auth.permissions import Permission
from llm_orchestrator.auth.principal import Principal

if TYPE_CHECKING:
    from llm_orchestrator.runtime import Runtime
    from llm_orchestrator.store.db import Read
    from llm_orchestrator.store.workflows import WorkflowHeader

router = APIRouter(
    prefix="/workflows",
    tags=["workflows"],
    responses=ERROR_RESPONSES,
    route_class=FastPathRoute,
)

Reader = Annotated[Principal, Depends(require(Permission.WORKFLOW_READ))]


@dataclass(frozen=True)
class _ListQuery:
    limit: int
    offset: int
    name: str | None
    version: str | None


@once_per_request
def _plain_list_query(request: Request) -> _ListQuery | None:
    """The query of ``GET /workflows`` if plainly well-formed (what FastAPI would accept,
    with the values it would give); None for anything else, which FastAPI answers."""
    query = plain_query(request, ("limit", "offset", "name", "version"))
    if query is None:
        return None
    limit = plain_int(query.get("limit"), DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = plain_int(query.get("offset"), 0, 0, MAX_OFFSET)
    name, version = query.get("name"), query.get("version")
    if limit is None or offset is None:
        return None
    if (name is not None and len(name) > 128) or (version is not None and len(version) > 32):
        return None
    return _ListQuery(limit, offset, name, version)


def _list_read(
    request: Request, runtime: Runtime, owner_filter: str | None, _user_id: str | None
) -> Read[tuple[list[WorkflowHeader], int] | None] | None:
    """The page ``list_workflows`` is about to read, from the raw query (the route's
    parameters are validated only after the caller is authenticated)."""
    query = _plain_list_query(request)
    if query is None:
        return None
    return runtime.workflows.list_read(
        owner_filter,
        name=query.name,
        version=query.version,
        limit=query.limit,
        offset=query.offset,
    )


# Authenticating goes with the page read: one round trip for the whole request.
_list_reader = require(Permission.WORKFLOW_READ, ride=_list_read)
ListReader = Annotated[Principal, Depends(_list_reader)]
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


async def _list_plainly(request: Request, query: _ListQuery) -> JsonBody:
    """``list_workflows``'s fast path: what its dependencies and body do, in order."""
    await reject_unstorable_input(request)
    runtime = await get_runtime(request)
    caller = await _list_reader(request)
    records, total = await _page(request, runtime, caller, query)
    return JsonBody(workflow_list_json(records, total, query.limit, query.offset))


@router.get("", response_model=WorkflowList)
@fast_path(_plain_list_query, _list_plainly)
async def list_workflows(
    request: Request,
    runtime: RuntimeDep,
    caller: ListReader,
    page: Page,
    name: Annotated[str | None, Query(max_length=128, description="Partial match")] = None,
    version: Annotated[str | None, Query(max_length=32)] = None,
) -> WorkflowList:
    records, total = await _page(
        request, runtime, caller, _ListQuery(page.limit, page.offset, name, version)
    )
    return WorkflowList(
        workflows=[WorkflowSummary.of(r) for r in records],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


async def _page(
    request: Request, runtime: Runtime, caller: Principal, query: _ListQuery
) -> tuple[list[WorkflowHeader], int]:
    read = runtime.workflows.list_read(
        caller.owner_filter(),
        name=query.name,
        version=query.version,
        limit=query.limit,
        offset=query.offset,
    )
    answer = carried(request, read)
    if answer is not None and answer[0] is not None:
        records, total = answer[0]
    else:
        records, total = await runtime.workflows.list(
            caller,
            name=query.name,
            version=query.version,
            limit=query.limit,
            offset=query.offset,
        )
    return records, total


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
