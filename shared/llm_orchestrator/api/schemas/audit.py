"""Audit event bodies."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from llm_orchestrator.api.schemas.common import PageMeta

if TYPE_CHECKING:
    from llm_orchestrator.audit.anchors import Anchor
    from llm_orchestrator.audit.trail import Verification
    from llm_orchestrator.store.audit import AuditRecord


class AuditEventPublic(BaseModel):
    id: str
    timestamp: datetime
    event_type: str
    user_id: str | None
    action: str
    resource_type: str | None
    resource_id: str | None
    result: str
    ip_address: str | None
    event_hash: str
    prev_hash: str
    details: dict[str, Any]

    @classmethod
    def of(cls, record: AuditRecord) -> AuditEventPublic:
        return cls(
            id=record.id,
            timestamp=record.occurred_at,
            event_type=record.event_type,
            user_id=record.user_id,
            action=record.action,
            resource_type=record.resource_type,
            resource_id=record.resource_id,
            result=record.result,
            ip_address=record.ip_address,
            event_hash=record.event_hash,
            prev_hash=record.prev_hash,
            details=record.details,
        )


class AuditEventList(PageMeta):
    events: list[AuditEventPublic]


class AnchorPublic(BaseModel):
    """A signed digest of the chain's head, kept outside the database."""

    seq: int
    event_hash: str
    anchored_at: datetime
    signature: str

    @classmethod
    def of(cls, anchor: Anchor) -> AnchorPublic:
        return cls(
            seq=anchor.seq,
            event_hash=anchor.event_hash,
            anchored_at=anchor.anchored_at,
            signature=anchor.signature,
        )


class VerificationPublic(BaseModel):
    valid: bool
    checked: int
    first_invalid_event_id: str | None
    anchor: AnchorPublic | None = None
    """The latest anchor the chain was checked against; null when none is readable here."""
    reason: str | None = None
    """Why the chain is not valid."""

    @classmethod
    def of(cls, verification: Verification) -> VerificationPublic:
        return cls(
            valid=verification.valid,
            checked=verification.checked,
            first_invalid_event_id=verification.first_invalid_event_id,
            anchor=AnchorPublic.of(verification.anchor) if verification.anchor else None,
            reason=verification.problem,
        )
