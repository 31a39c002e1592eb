"""FastAPI dependencies: the runtime, the caller, rate limits and permission checks.

Every dependency FastAPI resolves costs each request tens of microseconds (its signature's
parameters, a cache key, sub-dependencies), and the caller is resolved on every
authenticated request. So ``require(permission)`` is one dependency that reads the two
credential headers itself, rather than a chain through ``HTTPBearer`` and ``APIKeyHeader``
dependencies; the OpenAPI document still names both schemes on every operation that
authenticates (``security_schemes`` and ``authenticates``, used by the app factory).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.encoders import jsonable_encoder
from fastapi.security import APIKeyHeader, HTTPBearer

from llm_orchestrator.api.audit_log import client_ip
from llm_orchestrator.auth.permissions import Permission
from llm_orchestrator.auth.principal import Principal
from llm_orchestrator.errors import RateLimited, ServiceUnavailable, Unauthorized
from llm_orchestrator.ratelimit.limiter import PUBLIC_TIER
from llm_orchestrator.runtime import Runtime

if TYPE_CHECKING:
    from llm_orchestrator.auth.service import Carried
    from llm_orchestrator.store.db import Read

T = TypeVar("T")

log = logging.getLogger(__name__)
PUBLIC_LIMIT_TIMEOUT_SECONDS = 1.0
API_KEY_HEADER = "X-API-Key"
# Documentation only: the headers are read by ``authenticate``.
_bearer = HTTPBearer(auto_error=False, description="JWT access token from /auth/login")
_api_key = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="llo_sk_… API key")


def security_schemes() -> dict[str, Any]:
    """The OpenAPI ``securitySchemes`` of an authenticated operation, as FastAPI would
    write them for ``HTTPBearer`` and ``APIKeyHeader`` dependencies."""
    return {
        type(scheme).__name__: jsonable_encoder(scheme.model, by_alias=True, exclude_none=True)
        for scheme in (_bearer, _api_key)
    }


def authenticates(call: Any) -> bool:
    """Whether a dependency authenticates the caller (its operation names the schemes)."""
    return bool(getattr(call, "authenticates_caller", False))


async def get_runtime(request: Request) -> Runtime:
    provider: Callable[[], Awaitable[Runtime]] = request.app.state.runtime_provider
    # Once built, the runtime is taken as it is (asked several times per request), rather
    # than through a coroutine of the provider's each time.
    built: Runtime | None = getattr(provider, "built", None)
    return built if built is not None else await provider()


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def _count_request(
    request: Request,
    runtime: Runtime,
    subject: str,
    tier: str,
    *,
    timeout: float | None = None,
) -> None:
    if not runtime.settings.rate_limits_enabled:
        return
    state: Any = request.state
    try:
        status = await runtime.limiter.check(subject, tier, timeout=timeout)
    except RateLimited as exc:
        state.rate_limit_headers = {k: v for k, v in exc.headers.items() if k != "Retry-After"}
        raise
    state.rate_limit_headers = status.headers()


async def limit_by_client_ip(request: Request, runtime: RuntimeDep) -> None:
    """Public endpoints are limited per client IP.

    Fails open when the database cannot count within a second: health probes must still
    answer (and report the database as down) when it is, within their budget.
    """
    try:
        await _count_request(
            request,
            runtime,
            f"ip:{client_ip(request, runtime)}",
            PUBLIC_TIER,
            timeout=PUBLIC_LIMIT_TIMEOUT_SECONDS,
        )
    except ServiceUnavailable:
        log.warning("rate limiter unavailable; letting a public request through")


def _bearer_token(authorization: str) -> str | None:
    """The token of ``Bearer <token>`` (scheme case-insensitive), as ``HTTPBearer`` reads it."""
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


RouteRead = Callable[[Request, Runtime, "str | None", "str | None"], "Read[Any] | None"]
"""The read a route is about to make for a caller with a given owner filter (and user id,
when known before the lookup), from the raw request (None when it cannot tell): see
:func:`carried`."""


async def authenticate(request: Request) -> Principal:
    """The caller, authenticated and counted against their rate limits (once per request,
    however many dependencies ask)."""
    return await _authenticate(request, None)


async def _authenticate(request: Request, ride: RouteRead | None) -> Principal:
    """:func:`authenticate`; with ``ride``, a bearer token's lookup also makes the route's
    read in the same round trip (the route takes the answer with :func:`carried`)."""
    # The scope's state dict read directly: ``getattr(request.state, …, None)`` raises and
    # catches an AttributeError on every first ask (3 % of a GET's CPU).
    state: dict[str, Any] = request.scope.setdefault("state", {})
    known: Principal | None = state.get("principal")
    if known is not None:
        return known
    runtime = await get_runtime(request)
    headers = request.headers
    authorization = headers.get("authorization")
    api_key = headers.get(API_KEY_HEADER)
    counting = runtime.settings.rate_limits_enabled
    counted: list[int] | None = None
    bearer = _bearer_token(authorization) if authorization else None
    try:
        if bearer is not None:
            # The user lookup counts the request too: one round trip for both.
            charge = await runtime.limiter.prepare() if counting else None
            principal, counted, answer = await runtime.auth.authenticate_bearer_counted(
                bearer,
                charge,
                None if ride is None else lambda owner, user: ride(request, runtime, owner, user),
            )
            state["carried"] = answer
        elif authorization is not None:
            # A credential that is sent is checked, even beside a valid X-API-Key: a request
            # never succeeds while carrying one that is malformed.
            raise Unauthorized("Unsupported Authorization scheme; use 'Bearer <token>'")
        elif api_key:
            # The key lookup counts the request too, like the user lookup above.
            charge = await runtime.limiter.prepare() if counting else None
            principal, counted, answer = await runtime.auth.authenticate_api_key_counted(
                api_key,
                charge,
                None if ride is None else lambda owner, user: ride(request, runtime, owner, user),
            )
            state["carried"] = answer
        else:
            raise Unauthorized("Authentication required: send a Bearer token or an X-API-Key")
    except Unauthorized:
        # Failed credentials count against the client IP, so guessing keys is throttled too.
        await limit_by_client_ip(request, runtime)
        raise
    state["principal"] = principal
    if charge is not None and counted is not None:
        # Straight on the scope's state dict (what ``request.state`` wraps).
        try:
            status = runtime.limiter.settle(charge, principal.tier, counted)
        except RateLimited as exc:
            state["rate_limit_headers"] = {
                k: v for k, v in exc.headers.items() if k != "Retry-After"
            }
            raise
        state["rate_limit_headers"] = status.headers()
    else:
        await _count_request(request, runtime, principal.rate_limit_subject, principal.tier)
    return principal


authenticate.authenticates_caller = True  # type: ignore[attr-defined]
CurrentPrincipal = Annotated[Principal, Depends(authenticate)]


def carried(request: Request, read: Read[T]) -> tuple[T] | None:
    """The answer to ``read`` if it went out with the request's authentication (the same
    statement with the same parameters: the owner filter guessed then is the caller's
    real one), as a 1-tuple; None when the route must make the read itself."""
    answer: Carried | None = request.scope.get("state", {}).get("carried")
    if answer is None or answer.read.key != read.key:
        return None
    return (answer.answer,)


def require(
    permission: Permission, ride: RouteRead | None = None
) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency that authenticates and then insists on ``permission``; with ``ride``,
    the route's read goes with the authentication (see :func:`authenticate`)."""

    async def dependency(request: Request) -> Principal:
        principal = await _authenticate(request, ride)
        principal.require(permission)
        return principal

    dependency.__name__ = f"require_{permission.value}"
    dependency.authenticates_caller = True  # type: ignore[attr-defined]
    return dependency
