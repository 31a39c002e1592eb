"""Administration: users (stats, secrets and config join in with the audit issue)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status

from llm_orchestrator.api import audit_log
from llm_orchestrator.api.deps import RuntimeDep, require
from llm_orchestrator.api.pagination import Page
from llm_orchestrator.api.schemas.admin import CreateUserRequest, UserList, UserPublic
from llm_orchestrator.api.schemas.common import ERROR_RESPONSES
from llm_orchestrator.auth.permissions import Permission
from llm_orchestrator.auth.principal import Principal

router = APIRouter(prefix="/admin", tags=["admin"], responses=ERROR_RESPONSES)
Admin = Annotated[Principal, Depends(require(Permission.ADMIN_ACCESS))]


@router.get("/users", response_model=UserList)
async def list_users(runtime: RuntimeDep, _: Admin, page: Page) -> UserList:
    users, total = await runtime.user_admin.list_users(limit=page.limit, offset=page.offset)
    return UserList(
        users=[UserPublic.of(u) for u in users], total=total, limit=page.limit, offset=page.offset
    )


@router.post("/users", status_code=status.HTTP_201_CREATED, response_model=UserPublic)
async def create_user(
    body: CreateUserRequest, request: Request, runtime: RuntimeDep, _: Admin
) -> UserPublic:
    user = await runtime.user_admin.create_user(
        username=body.username,
        email=str(body.email),
        password=body.password,
        roles=body.roles,
        tier=body.tier,
    )
    await audit_log.record(
        request,
        runtime,
        event_type="user_management",
        action="Create user",
        resource_type="user",
        resource_id=user.id,
        details={"username": user.username, "roles": list(user.roles), "tier": user.tier},
    )
    return UserPublic.of(user)
