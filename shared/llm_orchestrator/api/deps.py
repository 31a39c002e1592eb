"""FastAPI dependencies: the runtime, the caller, and permission checks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from llm_orchestrator.auth.permissions import Permission
from llm_orchestrator.auth.principal import Principal
from llm_orchestrator.errors import Unauthorized
from llm_orchestrator.runtime import Runtime

_bearer = HTTPBearer(auto_error=False, description="JWT access token from /auth/login")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="llo_sk_… API key")


async def get_runtime(request: Request) -> Runtime:
    provider: Callable[[], Awaitable[Runtime]] = request.app.state.runtime_provider
    return await provider()


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def authenticate(
    request: Request,
    runtime: RuntimeDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    api_key: Annotated[str | None, Depends(_api_key)],
) -> Principal:
    if bearer is not None:
        principal = await runtime.auth.authenticate_bearer(bearer.credentials)
    elif api_key:
        principal = await runtime.auth.authenticate_api_key(api_key)
    elif request.headers.get("authorization"):
        raise Unauthorized("Unsupported Authorization scheme; use 'Bearer <token>'")
    else:
        raise Unauthorized("Authentication required: send a Bearer token or an X-API-Key")
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(authenticate)]


def require(permission: Permission) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that authenticates and then insists on ``permission``."""

    async def dependency(principal: CurrentPrincipal) -> Principal:
        principal.require(permission)
        return principal

    dependency.__name__ = f"require_{permission.value}"
    return dependency
