"""POST /auth/login, POST /auth/refresh, and API keys under /auth/keys."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Response, status

from llm_orchestrator.api.audit_log import Audit, AuditDep
from llm_orchestrator.api.deps import CurrentPrincipal, RuntimeDep, limit_by_client_ip, require
from llm_orchestrator.api.pagination import Page
from llm_orchestrator.api.schemas.auth import (
    ApiKeyPublic,
    CreatedKeyResponse,
    CreateKeyRequest,
    KeyList,
    LoginRequest,
    RefreshRequest,
    TokenResponse,
)
from llm_orchestrator.api.schemas.common import ERROR_RESPONSES
from llm_orchestrator.auth.permissions import Permission
from llm_orchestrator.auth.principal import Principal
from llm_orchestrator.errors import Unauthorized

if TYPE_CHECKING:
    from llm_orchestrator.auth.service import TokenPair

router = APIRouter(prefix="/auth", tags=["auth"], responses=ERROR_RESPONSES)


def _tokens(pair: TokenPair) -> TokenResponse:
    return TokenResponse(
        access_token=pair.access_token,
        refresh_token=pair.refresh_token,
        expires_in=pair.expires_in,
        user_id=pair.user.id,
        roles=list(pair.user.roles),
    )


async def _audited_exchange(
    audit: Audit,
    action: str,
    exchange: Awaitable[TokenPair],
    failure_details: Callable[[Unauthorized], dict[str, Any]],
) -> TokenResponse:
    """Logins and refreshes both land in the trail, failed ones with why."""
    try:
        pair = await exchange
    except Unauthorized as exc:
        await audit(
            "authentication",
            action,
            result="failure",
            details=failure_details(exc),
        )
        raise
    await audit(
        "authentication",
        action,
        user_id=pair.user.id,
        resource_type="user",
        resource_id=pair.user.id,
    )
    return _tokens(pair)


@router.post("/login", response_model=TokenResponse, dependencies=[Depends(limit_by_client_ip)])
async def login(body: LoginRequest, audit: AuditDep, runtime: RuntimeDep) -> TokenResponse:
    return await _audited_exchange(
        audit,
        "Login",
        runtime.auth.login(body.username, body.password),
        lambda _: {"username": body.username},
    )


@router.post("/refresh", response_model=TokenResponse, dependencies=[Depends(limit_by_client_ip)])
async def refresh(body: RefreshRequest, audit: AuditDep, runtime: RuntimeDep) -> TokenResponse:
    return await _audited_exchange(
        audit,
        "Refresh token",
        runtime.auth.refresh(body.refresh_token),
        lambda exc: {"reason": exc.message},
    )


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(audit: AuditDep, runtime: RuntimeDep, caller: CurrentPrincipal) -> Response:
    """End the session of the Bearer access token sent: every refresh and access token of
    that login stops working at once. API keys have no session (revoke them instead)."""
    await runtime.auth.logout(caller)
    await audit(
        "authentication",
        "Logout",
        resource_type="user",
        resource_id=caller.user_id,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/keys", status_code=status.HTTP_201_CREATED, response_model=CreatedKeyResponse)
async def create_key(
    body: CreateKeyRequest,
    audit: AuditDep,
    runtime: RuntimeDep,
    caller: Annotated[Principal, Depends(require(Permission.ADMIN_ACCESS))],
) -> CreatedKeyResponse:
    created = await runtime.auth.create_key(
        caller,
        name=body.name,
        scopes=body.scopes,
        expires_in_days=body.expires_in_days,
        owner_id=body.user_id,
    )
    key = created.key
    await audit(
        "api_key",
        "Create API key",
        resource_type="api_key",
        resource_id=str(key.id),
        details={"name": key.name, "owner": key.user_id, "scopes": list(key.scopes)},
    )
    return CreatedKeyResponse(
        id=key.id,
        key=created.raw_key,
        user_id=key.user_id,
        scopes=list(key.scopes),
        created_at=key.created_at,
        expires_at=key.expires_at,
        name=key.name,
    )


@router.get("/keys", response_model=KeyList)
async def list_keys(runtime: RuntimeDep, caller: CurrentPrincipal, page: Page) -> KeyList:
    keys, total = await runtime.auth.list_keys(caller, limit=page.limit, offset=page.offset)
    return KeyList(
        keys=[ApiKeyPublic.of(k) for k in keys], total=total, limit=page.limit, offset=page.offset
    )


@router.delete("/keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_key(
    key_id: str, audit: AuditDep, runtime: RuntimeDep, caller: CurrentPrincipal
) -> Response:
    await runtime.auth.revoke_key(caller, key_id)
    await audit(
        "api_key",
        "Revoke API key",
        resource_type="api_key",
        resource_id=key_id,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
