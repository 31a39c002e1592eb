"""GET /audit/events, /audit/events/{eventId} and /audit/verify (AdminAccess)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from llm_orchestrator.api.deps import RuntimeDep, require
from llm_orchestrator.api.pagination import Page
from llm_orchestrator.api.schemas.audit import (
    AuditEventList,
    AuditEventPublic,
    VerificationPublic,
)
from llm_orchestrator.api.schemas.common import ERROR_RESPONSES
from llm_orchestrator.auth.permissions import Permission
from llm_orchestrator.auth.principal import Principal
from llm_orchestrator.errors import FieldError, NotFound, ValidationFailed
from llm_orchestrator.store.audit import AuditFilter

router = APIRouter(prefix="/audit", tags=["audit"], responses=ERROR_RESPONSES)
Admin = Annotated[Principal, Depends(require(Permission.ADMIN_ACCESS))]


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValidationFailed(
            "Invalid query", [FieldError(name, "Needs a time zone, e.g. 2025-11-14T10:00:00Z")]
        )
    return value


@router.get("/events", response_model=AuditEventList)
async def list_events(
    runtime: RuntimeDep,
    _: Admin,
    page: Page,
    user_id: str | None = None,
    event_type: str | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    start_time: Annotated[datetime | None, Query(description="ISO 8601 datetime")] = None,
    end_time: Annotated[datetime | None, Query(description="ISO 8601 datetime")] = None,
    result: Literal["success", "failure", "partial_success"] | None = None,
) -> AuditEventList:
    start, end = _aware(start_time, "start_time"), _aware(end_time, "end_time")
    if start and end and start > end:
        raise ValidationFailed(
            "Invalid query", [FieldError("start_time", "Must not be after end_time")]
        )
    events, total = await runtime.audit.query(
        AuditFilter(
            user_id=user_id,
            event_type=event_type,
            resource_type=resource_type,
            resource_id=resource_id,
            result=result,
            start_time=start,
            end_time=end,
        ),
        limit=page.limit,
        offset=page.offset,
    )
    return AuditEventList(
        events=[AuditEventPublic.of(e) for e in events],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/verify", response_model=VerificationPublic)
async def verify(runtime: RuntimeDep, _: Admin) -> VerificationPublic:
    return VerificationPublic.of(await runtime.audit.verify())


@router.get("/events/{event_id}", response_model=AuditEventPublic)
async def get_event(event_id: str, runtime: RuntimeDep, _: Admin) -> AuditEventPublic:
    record = await runtime.audit.get(event_id)
    if record is None:
        raise NotFound("Audit event not found")
    return AuditEventPublic.of(record)
