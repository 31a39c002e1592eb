"""The audit trail: an append-only, hash-chained table.

Writers lock the single chain-head row for the few statements of an append, so concurrent
writers produce one unbroken chain: no two events ever share a predecessor. Every writer
serialises on that row, so an append holds it as briefly as it can: one round trip reads
and locks the head, the hash is computed, and the event, the new head and the ``COMMIT`` go
out together (pipelined); the lock is released with that commit. An append may also run
inside a caller's transaction (``conn``), which then commits the event with its own writes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from llm_orchestrator.store.db import Connection, Database, fetch_page


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    id: str
    occurred_at: datetime
    event_type: str
    user_id: str | None
    action: str
    resource_type: str | None
    resource_id: str | None
    result: str
    ip_address: str | None
    details: dict[str, Any]
    prev_hash: str
    event_hash: str


@dataclass(frozen=True)
class AuditFilter:
    user_id: str | None = None
    event_type: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    result: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None

    def sql(self) -> tuple[str, tuple[Any, ...]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("user_id", self.user_id),
            ("event_type", self.event_type),
            ("resource_type", self.resource_type),
            ("resource_id", self.resource_id),
            ("result", self.result),
        ):
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        if self.start_time is not None:
            clauses.append("occurred_at >= %s")
            params.append(self.start_time)
        if self.end_time is not None:
            clauses.append("occurred_at <= %s")
            params.append(self.end_time)
        return " AND ".join(clauses) or "TRUE", tuple(params)


def _record(row: dict[str, Any]) -> AuditRecord:
    return AuditRecord(**{k: row[k] for k in AuditRecord.__dataclass_fields__})


# (previous hash, event fields without hashes) -> this event's hash
ChainHasher = Callable[[str, dict[str, Any]], str]


class AuditRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(
        self, fields: dict[str, Any], hasher: ChainHasher, *, conn: Connection | None = None
    ) -> AuditRecord:
        """Append one event. With ``conn`` (in a transaction), the event is written on it and
        commits, or not, with the caller's transaction; the chain head stays locked until
        then, so the caller should commit promptly."""
        if conn is not None:
            return await append_event(conn, fields, hasher)
        async with self._db.transaction(pipelined=True) as conn:
            return await append_event(conn, fields, hasher)

    async def get(self, event_id: str) -> AuditRecord | None:
        async with self._db.connection() as conn:
            cur = await conn.execute("SELECT * FROM audit_events WHERE id = %s", (event_id,))
            row = await cur.fetchone()
        return _record(row) if row else None

    async def query(
        self, audit_filter: AuditFilter, *, limit: int, offset: int
    ) -> tuple[list[AuditRecord], int]:
        where, params = audit_filter.sql()
        async with self._db.connection() as conn:
            rows, total = await fetch_page(
                conn,
                source="audit_events",
                where=where,
                params=params,
                order_by="seq DESC",
                limit=limit,
                offset=offset,
            )
        return [_record(r) for r in rows], total

    async def iterate_chain(self, *, upto: int, batch: int = 1000) -> AsyncIterator[AuditRecord]:
        """Events ``1..upto`` in chain order, a batch at a time (verify reads them all)."""
        after = 0
        while after < upto:
            async with self._db.connection() as conn:
                cur = await conn.execute(
                    "SELECT * FROM audit_events WHERE seq > %s AND seq <= %s ORDER BY seq LIMIT %s",
                    (after, upto, batch),
                )
                rows = await cur.fetchall()
            if not rows:
                return
            for row in rows:
                yield _record(row)
            after = int(rows[-1]["seq"])

    async def head(self) -> tuple[int, str]:
        async with self._db.connection() as conn:
            cur = await conn.execute("SELECT seq, last_hash FROM audit_chain_head")
            row = await cur.fetchone()
        assert row is not None
        return int(row["seq"]), str(row["last_hash"])


async def append_event(
    conn: Connection, fields: dict[str, Any], hasher: ChainHasher
) -> AuditRecord:
    """Lock the chain head, link the event to it and write both (not yet committed).

    One round trip to read the head (it also sends whatever ``conn`` has queued); the
    writes are queued behind it and go out with the transaction's ``COMMIT`` when ``conn``
    is pipelined. The record returned is what was written.
    """
    cur = await conn.execute(
        "SELECT seq, last_hash FROM audit_chain_head WHERE singleton FOR UPDATE"
    )
    head = await cur.fetchone()
    assert head is not None, "migration 0002 seeds the chain head"
    prev_hash = str(head["last_hash"])
    event_hash = hasher(prev_hash, fields)
    seq = int(head["seq"]) + 1
    await conn.execute(
        "WITH head AS (UPDATE audit_chain_head SET seq = %(seq)s, last_hash = %(hash)s"
        " WHERE singleton)"
        " INSERT INTO audit_events (seq, id, occurred_at, event_type, user_id, action,"
        " resource_type, resource_id, result, ip_address, details, prev_hash, event_hash)"
        " VALUES (%(seq)s, %(id)s, %(occurred_at)s, %(event_type)s, %(user_id)s, %(action)s,"
        " %(resource_type)s, %(resource_id)s, %(result)s, %(ip_address)s, %(details)s,"
        " %(prev_hash)s, %(hash)s)",
        {
            **{name: fields[name] for name in _EVENT_FIELDS},
            "details": Jsonb(fields["details"]),
            "seq": seq,
            "prev_hash": prev_hash,
            "hash": event_hash,
        },
    )
    return AuditRecord(
        seq=seq,
        **{name: fields[name] for name in _EVENT_FIELDS},
        details=fields["details"],
        prev_hash=prev_hash,
        event_hash=event_hash,
    )


_EVENT_FIELDS = (
    "id",
    "occurred_at",
    "event_type",
    "user_id",
    "action",
    "resource_type",
    "resource_id",
    "result",
    "ip_address",
)
