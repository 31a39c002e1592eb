"""Triggers: schedules and event patterns attached to workflows."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from llm_orchestrator.store.db import Database, fetch_page


@dataclass(frozen=True)
class TriggerRecord:
    id: str
    workflow_id: uuid.UUID
    type: str
    schedule: str | None
    event_pattern: dict[str, Any] | None
    inputs: dict[str, Any]
    enabled: bool
    status: str
    status_reason: str | None
    created_by: str | None
    created_at: datetime
    next_fire_at: datetime | None
    last_fired_at: datetime | None
    last_execution_id: str | None
    last_error: str | None


def _trigger(row: dict[str, Any]) -> TriggerRecord:
    return TriggerRecord(**{k: row[k] for k in TriggerRecord.__dataclass_fields__})


_LIVE = "enabled AND status = 'active'"
LIVE_EVENT_TRIGGERS = f"SELECT * FROM triggers WHERE type = 'event' AND {_LIVE}"
"""The event triggers a completion event is matched against (order them by
``created_at, id``); another statement may carry it (an execution's end)."""


def trigger_record(row: dict[str, Any]) -> TriggerRecord:
    """A ``triggers`` row as a record."""
    return _trigger(row)


class TriggerRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        *,
        trigger_id: str,
        workflow_id: uuid.UUID,
        type: str,
        schedule: str | None,
        event_pattern: dict[str, Any] | None,
        inputs: dict[str, Any],
        enabled: bool,
        created_by: str,
        next_fire_at: datetime | None,
        now: datetime,
    ) -> TriggerRecord:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO triggers (id, workflow_id, type, schedule, event_pattern, inputs,"
                " enabled, created_by, created_at, next_fire_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *",
                (
                    trigger_id,
                    workflow_id,
                    type,
                    schedule,
                    Jsonb(event_pattern) if event_pattern is not None else None,
                    Jsonb(inputs),
                    enabled,
                    created_by,
                    now,
                    next_fire_at,
                ),
            )
            row = await cur.fetchone()
        assert row is not None
        return _trigger(row)

    async def get(
        self, trigger_id: str, *, workflow_id: uuid.UUID | None = None
    ) -> TriggerRecord | None:
        workflow_sql = "TRUE" if workflow_id is None else "workflow_id = %s"
        params = () if workflow_id is None else (workflow_id,)
        async with self._db.connection() as conn:
            cur = await conn.execute(
                f"SELECT * FROM triggers WHERE id = %s AND {workflow_sql}", (trigger_id, *params)
            )
            row = await cur.fetchone()
        return _trigger(row) if row else None

    async def list_page(
        self, workflow_id: uuid.UUID, *, limit: int, offset: int
    ) -> tuple[list[TriggerRecord], int]:
        async with self._db.connection() as conn:
            rows, total = await fetch_page(
                conn,
                source="triggers",
                where="workflow_id = %s",
                params=(workflow_id,),
                order_by="created_at, id",
                limit=limit,
                offset=offset,
            )
        return [_trigger(r) for r in rows], total

    async def delete(self, trigger_id: str, *, workflow_id: uuid.UUID) -> TriggerRecord | None:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "DELETE FROM triggers WHERE id = %s AND workflow_id = %s RETURNING *",
                (trigger_id, workflow_id),
            )
            row = await cur.fetchone()
        return _trigger(row) if row else None

    async def due_schedules(self, now: datetime, *, limit: int = 100) -> list[TriggerRecord]:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                f"SELECT * FROM triggers WHERE type = 'schedule' AND {_LIVE}"
                " AND next_fire_at <= %s ORDER BY next_fire_at, id LIMIT %s",
                (now, limit),
            )
            return [_trigger(r) for r in await cur.fetchall()]

    async def next_due_at(self) -> datetime | None:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                f"SELECT min(next_fire_at) AS due FROM triggers WHERE type = 'schedule' AND {_LIVE}"
            )
            row = await cur.fetchone()
        return row["due"] if row else None

    async def claim_tick(
        self, trigger_id: str, *, due: datetime, following: datetime | None
    ) -> bool:
        """Move a schedule from the tick ``due`` to ``following``; False if another process
        (or an earlier pass) already did, in which case this one must not fire."""
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "UPDATE triggers SET next_fire_at = %s WHERE id = %s AND next_fire_at = %s"
                " RETURNING 1",
                (following, trigger_id, due),
            )
            return await cur.fetchone() is not None

    async def claim_delivery(self, trigger_id: str, fire_key: str) -> bool:
        """Remember ``fire_key`` as the latest delivery; False when it already was (a
        redelivered schedule tick or event)."""
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "UPDATE triggers SET last_fire_key = %s WHERE id = %s"
                " AND last_fire_key IS DISTINCT FROM %s RETURNING 1",
                (fire_key, trigger_id, fire_key),
            )
            return await cur.fetchone() is not None

    async def live_event_triggers(self) -> list[TriggerRecord]:
        async with self._db.connection() as conn:
            cur = await conn.execute(f"{LIVE_EVENT_TRIGGERS} ORDER BY created_at, id")
            return [_trigger(r) for r in await cur.fetchall()]

    async def record_fire(
        self,
        trigger_id: str,
        *,
        now: datetime,
        execution_id: str | None,
        error: str | None,
    ) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                "UPDATE triggers SET last_fired_at = %s,"
                " last_execution_id = COALESCE(%s, last_execution_id), last_error = %s"
                " WHERE id = %s",
                (now, execution_id, error, trigger_id),
            )

    async def stop(self, trigger_id: str, reason: str) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                "UPDATE triggers SET status = 'stopped', status_reason = %s, next_fire_at = NULL"
                " WHERE id = %s AND status = 'active'",
                (reason, trigger_id),
            )
