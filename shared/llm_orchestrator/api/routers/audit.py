"""GET /audit/events, /audit/events/{eventId} and /audit/verify (AdminAccess)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import WithJsonSchema

from llm_orchestrator.api.deps import RuntimeDep, require
from llm_orchestrator.api.pagination import Page
from llm_orchestrator.api.schemas.audit import (
    AnchorPublic,
    AuditEventList,
    AuditEventPublic,
    VerificationPublic,
)
from llm_orchestrator.api.schemas.common import ERROR_RESPONSES
from llm_orchestrator.auth.permissions import Permission
from llm_orchestrator.auth.principal import Principal
from llm_orchestrator.errors import FieldError, NotFound, ValidationFailed

router = APIRouter(prefix="/audit", tags=["audit"], responses=ERROR_RESPONSES)
Admin = Annotated[Principal, Depends(require(Permission.ADMIN_ACCESS))]


# A date, "T", a time, and a zone: pydantic alone would also take "1700000000" or "0.5"
# as Unix timestamps, which the reference's "ISO 8601 datetime" does not allow. Spelled out
# to the day of the month (leap years included) so that the OpenAPI document carries the
# very rule: a string the pattern admits is a date the server takes.
_YEAR = "(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"
_LEAP_YEAR = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_DATE = (
    f"(?:{_YEAR}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    f"|{_LEAP_YEAR}-02-29)"
)
_TIME = "(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\\.[0-9]{1,6})?)?"
_ZONE = "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
ISO_8601_PATTERN = f"^{_DATE}T{_TIME}{_ZONE}$"
_ISO_8601 = re.compile(ISO_8601_PATTERN.removesuffix("$") + "\\Z")
_EXAMPLE = "e.g. 2025-11-14T10:00:00Z"
_TIME_SCHEMA = WithJsonSchema({"type": "string", "maxLength": 40, "pattern": ISO_8601_PATTERN})


def _iso_datetime(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    if not _ISO_8601.match(value):
        raise ValidationFailed(
            "Invalid query",
            [FieldError(name, f"Must be an ISO 8601 date and time with a zone, {_EXAMPLE}")],
        )
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise ValidationFailed(
            "Invalid query", [FieldError(name, f"Not a valid date and time, {_EXAMPLE}")]
        ) from None


@router.get("/events", response_model=AuditEventList)
async def list_events(
    runtime: RuntimeDep,
    _: Admin,
    page: Page,
    user_id: str | None = None,
    event_type: str | None = None,
    resource_type: str | None = None,
    resource_id: str | None = None,
    start_time: Annotated[
        str | None,
        Query(description="ISO 8601 datetime with a zone; not after end_time", max_length=40),
        _TIME_SCHEMA,
    ] = None,
    end_time: Annotated[
        str | None,
        Query(description="ISO 8601 datetime with a zone", max_length=40),
        _TIME_SCHEMA,
    ] = None,
    result: Literal["success", "failure", "partial_success"] | None = None,
) -> AuditEventList:
    start, end = _iso_datetime(start_time, "start_time"), _iso_datetime(end_time, "end_time")
    if start and end and start > end:
        raise ValidationFailed(
            "Invalid query", [FieldError("start_time", "Must not be after end_time")]
        )
    events, total = await runtime.audit.query(
        user_id=user_id,
        event_type=event_type,
        resource_type=resource_type,
        resource_id=resource_id,
        result=result,
        start_time=start,
        end_time=end,
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


@router.post("/anchor", response_model=AnchorPublic)
async def anchor(runtime: RuntimeDep, _: Admin) -> AnchorPublic:
    """Anchor the chain's head now: a signed digest written outside the database (the log,
    and locally a file in the data directory) that later verifications check against."""
    return AnchorPublic.of(await runtime.audit.anchor())


@router.get("/events/{event_id}", response_model=AuditEventPublic)
async def get_event(event_id: str, runtime: RuntimeDep, _: Admin) -> AuditEventPublic:
    record = await runtime.audit.get(event_id)
    if record is None:
        raise NotFound("Audit event not found")
    return AuditEventPublic.of(record)
