"""GET /state/{workflowId}, GET/POST /state/{workflowId}/checkpoints, POST .../restore."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from llm_orchestrator.api.audit_log import AuditDep
from llm_orchestrator.api.deps import RuntimeDep, require
from llm_orchestrator.api.pagination import Page
from llm_orchestrator.api.schemas.common import ERROR_RESPONSES
from llm_orchestrator.api.schemas.executions import (
    CheckpointList,
    CheckpointPublic,
    CreateCheckpointRequest,
    ExecutionPublic,
    RestoreRequest,
)
from llm_orchestrator.auth.permissions import Permission
from llm_orchestrator.auth.principal import Principal

router = APIRouter(prefix="/state", tags=["state"], responses=ERROR_RESPONSES)

Executor = Annotated[Principal, Depends(require(Permission.WORKFLOW_EXECUTE))]
Reader = Annotated[Principal, Depends(require(Permission.EXECUTION_READ))]
ExecutionId = Annotated[str, Query(alias="executionId", min_length=1, max_length=200)]


@router.get("/{workflow_id}", response_model=ExecutionPublic)
async def get_state(
    workflow_id: str, execution_id: ExecutionId, runtime: RuntimeDep, caller: Reader
) -> ExecutionPublic:
    return ExecutionPublic.of(await runtime.executions.state(caller, workflow_id, execution_id))


@router.get("/{workflow_id}/checkpoints", response_model=CheckpointList)
async def list_checkpoints(
    workflow_id: str, execution_id: ExecutionId, page: Page, runtime: RuntimeDep, caller: Reader
) -> CheckpointList:
    records, total = await runtime.executions.checkpoints(
        caller, workflow_id, execution_id, limit=page.limit, offset=page.offset
    )
    return CheckpointList(
        checkpoints=[CheckpointPublic.of(r) for r in records],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.post(
    "/{workflow_id}/checkpoints",
    status_code=status.HTTP_201_CREATED,
    response_model=CheckpointPublic,
)
async def create_checkpoint(
    workflow_id: str,
    body: CreateCheckpointRequest,
    audit: AuditDep,
    runtime: RuntimeDep,
    caller: Executor,
) -> CheckpointPublic:
    record = await runtime.executions.create_checkpoint(
        caller, workflow_id, body.execution_id, body.step_id
    )
    await audit(
        "checkpoint",
        "create",
        resource_type="checkpoint",
        resource_id=record.id,
        details={"execution_id": record.execution_id, "step_id": record.step_id},
    )
    return CheckpointPublic.of(record)


@router.post("/{workflow_id}/restore", response_model=ExecutionPublic)
async def restore(
    workflow_id: str,
    body: RestoreRequest,
    audit: AuditDep,
    runtime: RuntimeDep,
    caller: Executor,
) -> ExecutionPublic:
    state = await runtime.executions.restore(caller, workflow_id, body.checkpoint_id, audit.actor())
    return ExecutionPublic.of(state)
