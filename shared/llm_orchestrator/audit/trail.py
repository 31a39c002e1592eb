"""The tamper-evident audit trail.

``event_hash = sha256(prev_hash + canonical_json(event))`` where the canonical JSON covers
every stored field but the hashes, with sorted keys and no whitespace. Changing, removing or
reordering any event breaks the link to its successor, and ``verify`` names the first event
whose stored hash no longer matches.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from llm_orchestrator import ids
from llm_orchestrator.store.audit import AuditFilter, AuditRecord, AuditRepository

Result = Literal["success", "failure", "partial_success"]
GENESIS_HASH = "sha256:genesis"


def canonical_json(fields: Mapping[str, Any]) -> str:
    def default(value: Any) -> str:
        if isinstance(value, datetime):
            return value.astimezone(UTC).isoformat(timespec="microseconds")
        return str(value)

    return json.dumps(fields, sort_keys=True, separators=(",", ":"), default=default)


def chain_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    digest = hashlib.sha256((prev_hash + canonical_json(fields)).encode()).hexdigest()
    return f"sha256:{digest}"


def _hashed_fields(record: AuditRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "occurred_at": record.occurred_at,
        "event_type": record.event_type,
        "user_id": record.user_id,
        "action": record.action,
        "resource_type": record.resource_type,
        "resource_id": record.resource_id,
        "result": record.result,
        "ip_address": record.ip_address,
        "details": record.details,
    }


@dataclass(frozen=True)
class Verification:
    valid: bool
    checked: int
    first_invalid_event_id: str | None


class AuditTrail:
    def __init__(self, repository: AuditRepository, clock: Callable[[], datetime]) -> None:
        self._repo = repository
        self._now = clock

    async def record(
        self,
        *,
        event_type: str,
        action: str,
        result: Result = "success",
        user_id: str | None = None,
        resource_type: str | None = None,
        resource_id: str | None = None,
        ip_address: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> AuditRecord:
        # Stored timestamps have microsecond precision; hash exactly what is stored.
        fields: dict[str, Any] = {
            "id": ids.event_id(),
            "occurred_at": self._now().astimezone(UTC),
            "event_type": event_type,
            "user_id": user_id,
            "action": action,
            "resource_type": resource_type,
            "resource_id": resource_id,
            "result": result,
            "ip_address": ip_address,
            "details": json.loads(canonical_json(details or {})),
        }
        return await self._repo.append(fields, chain_hash)

    async def get(self, event_id: str) -> AuditRecord | None:
        return await self._repo.get(event_id)

    async def query(
        self,
        *,
        limit: int,
        offset: int,
        user_id: str | None = None,
        event_type: str | None = None,
        resource_type: str | None = None,
        resource_id: str | None = None,
        result: Result | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
    ) -> tuple[list[AuditRecord], int]:
        """Events matching every filter given (None: any), newest first."""
        audit_filter = AuditFilter(
            user_id=user_id,
            event_type=event_type,
            resource_type=resource_type,
            resource_id=resource_id,
            result=result,
            start_time=start_time,
            end_time=end_time,
        )
        return await self._repo.query(audit_filter, limit=limit, offset=offset)

    async def verify(self) -> Verification:
        head_seq, head_hash = await self._repo.head()
        expected_prev = GENESIS_HASH
        checked = 0
        expected_seq = 1
        async for record in self._repo.iterate_chain(upto=head_seq):
            checked += 1
            recomputed = chain_hash(expected_prev, _hashed_fields(record))
            if (
                record.seq != expected_seq
                or record.prev_hash != expected_prev
                or record.event_hash != recomputed
            ):
                return Verification(False, checked, record.id)
            expected_prev = record.event_hash
            expected_seq += 1
        if head_seq != checked or head_hash != expected_prev:
            # Events were removed from the end of the chain.
            return Verification(False, checked, None)
        return Verification(True, checked, None)
