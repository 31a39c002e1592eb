"""Recording audit events from the HTTP layer, where the caller and client IP are known.

A write route takes :data:`AuditDep` and records what it did in one call, for example
``await audit("workflow_management", "Delete workflow", resource_type="workflow",
resource_id=workflow_id)``: who asked, from which address, and the request id are filled in.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request

from llm_orchestrator.api import client_address
from llm_orchestrator.auth.principal import Principal

if TYPE_CHECKING:
    from llm_orchestrator.audit.trail import Result
    from llm_orchestrator.executions.lifecycle import Actor
    from llm_orchestrator.runtime import Runtime

log = logging.getLogger(__name__)


def client_ip(request: Request, runtime: Runtime) -> str:
    """The client's address, forwarded headers believed only from trusted proxies."""
    return client_address.client_ip(request, runtime.settings.trusted_proxies)


def actor(request: Request, runtime: Runtime) -> Actor:
    """Who asks, as the execution lifecycle records it in the audit events it writes."""
    from llm_orchestrator.executions.lifecycle import Actor

    principal: Principal | None = getattr(request.state, "principal", None)
    return Actor(
        user_id=principal.user_id if principal else None,
        ip_address=client_ip(request, runtime),
        request_id=request.state.request_id,
    )


class Audit:
    """The audit trail as one request sees it: a call records one event, with the caller
    (unless ``user_id`` names the user), the client's address and the request id taken
    from the request; ``details`` add to the request id."""

    __slots__ = ("_request", "_runtime")

    def __init__(self, request: Request, runtime: Runtime) -> None:
        self._request = request
        self._runtime = runtime

    async def __call__(
        self,
        event_type: str,
        action: str,
        *,
        result: Result = "success",
        resource_type: str | None = None,
        resource_id: str | None = None,
        details: dict[str, Any] | None = None,
        user_id: str | None = None,
    ) -> None:
        request = self._request
        principal: Principal | None = getattr(request.state, "principal", None)
        await self._runtime.audit.record(
            event_type=event_type,
            action=action,
            result=result,
            user_id=user_id or (principal.user_id if principal else None),
            resource_type=resource_type,
            resource_id=resource_id,
            ip_address=client_ip(request, self._runtime),
            details={"request_id": request.state.request_id, **(details or {})},
        )
        request.state.audited = True

    def actor(self) -> Actor:
        """Who asks, for the transitions the execution lifecycle audits itself."""
        return actor(self._request, self._runtime)


async def _audit(request: Request) -> Audit:
    # The runtime as ``deps.get_runtime`` gets it (deps imports this module, not the reverse).
    runtime: Runtime = await request.app.state.runtime_provider()
    return Audit(request, runtime)


AuditDep = Annotated[Audit, Depends(_audit)]
"""A route's :class:`Audit`: ``await audit(event_type, action, resource_type=…, …)``."""


async def record_refusal(request: Request, status: int, message: str) -> None:
    """Every 401/403 lands in the trail, unless the route already recorded the failure."""
    if getattr(request.state, "audited", False):
        return
    try:
        runtime: Runtime = await request.app.state.runtime_provider()
        await Audit(request, runtime)(
            "access_denied",
            f"{request.method} {request.url.path}",
            result="failure",
            details={"status": status, "reason": message},
        )
    except Exception:  # the refusal must still be answered if the trail is unavailable
        log.exception("could not record an access refusal in the audit trail")
