"""Workflow definitions, owned by users."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from llm_orchestrator.executions.status import ACTIVE
from llm_orchestrator.store.db import Database, fetch_page, owner_clause


@dataclass(frozen=True)
class WorkflowHeader:
    """A workflow as a listing shows it: everything but the definition."""

    id: uuid.UUID
    owner_id: str
    name: str
    version: str
    description: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class WorkflowRecord(WorkflowHeader):
    definition: dict[str, Any]
    timeout_seconds: int


_HEADER_COLUMNS = ", ".join(WorkflowHeader.__dataclass_fields__)


def _workflow(row: dict[str, Any]) -> WorkflowRecord:
    return WorkflowRecord(**{k: row[k] for k in WorkflowRecord.__dataclass_fields__})


class WorkflowRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        *,
        workflow_id: uuid.UUID,
        owner_id: str,
        name: str,
        version: str,
        description: str | None,
        definition: dict[str, Any],
        timeout_seconds: int,
        now: datetime,
    ) -> WorkflowRecord:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO workflows (id, owner_id, name, version, description, definition,"
                " timeout_seconds, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING *",
                (
                    workflow_id,
                    owner_id,
                    name,
                    version,
                    description,
                    Jsonb(definition),
                    timeout_seconds,
                    now,
                    now,
                ),
            )
            row = await cur.fetchone()
        assert row is not None
        return _workflow(row)

    async def get(self, workflow_id: uuid.UUID, *, owner_id: str | None) -> WorkflowRecord | None:
        """The workflow if it exists and ``owner_id`` (None: anyone) owns it."""
        owner_sql, owner_params = owner_clause(owner_id)
        async with self._db.connection() as conn:
            cur = await conn.execute(
                f"SELECT * FROM workflows WHERE id = %s AND {owner_sql}",
                (workflow_id, *owner_params),
            )
            row = await cur.fetchone()
        return _workflow(row) if row else None

    async def list(
        self,
        *,
        owner_id: str | None,
        name: str | None,
        version: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[WorkflowHeader], int]:
        """One page of headers: the definitions (the bulk of a row, and JSON to decode) are
        not read."""
        owner_sql, owner_params = owner_clause(owner_id)
        clauses, params = [owner_sql], list(owner_params)
        if name:
            escaped = name.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            clauses.append("lower(name) LIKE %s")
            params.append(f"%{escaped}%")
        if version:
            clauses.append("version = %s")
            params.append(version)
        async with self._db.connection() as conn:
            rows, total = await fetch_page(
                conn,
                source="workflows",
                where=" AND ".join(clauses),
                params=tuple(params),
                order_by="created_at, id",
                limit=limit,
                offset=offset,
                columns=_HEADER_COLUMNS,
            )
        return [WorkflowHeader(**r) for r in rows], total

    async def update(
        self,
        workflow_id: uuid.UUID,
        *,
        owner_id: str | None,
        name: str,
        version: str,
        description: str | None,
        definition: dict[str, Any],
        timeout_seconds: int,
        now: datetime,
    ) -> WorkflowRecord | None:
        owner_sql, owner_params = owner_clause(owner_id)
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "UPDATE workflows SET name = %s, version = %s, description = %s,"
                " definition = %s, timeout_seconds = %s, updated_at = %s"
                f" WHERE id = %s AND {owner_sql} RETURNING *",
                (
                    name,
                    version,
                    description,
                    Jsonb(definition),
                    timeout_seconds,
                    now,
                    workflow_id,
                    *owner_params,
                ),
            )
            row = await cur.fetchone()
        return _workflow(row) if row else None

    async def delete_if_idle(self, workflow_id: uuid.UUID, *, owner_id: str | None) -> str:
        """Delete unless an execution is active. Returns "deleted", "missing" or "busy".

        The workflow row is locked first, so an execution cannot start in between.
        """
        owner_sql, owner_params = owner_clause(owner_id)
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                f"SELECT id FROM workflows WHERE id = %s AND {owner_sql} FOR UPDATE",
                (workflow_id, *owner_params),
            )
            if await cur.fetchone() is None:
                return "missing"
            cur = await conn.execute(
                "SELECT 1 FROM executions WHERE workflow_id = %s AND status = ANY(%s) LIMIT 1",
                (workflow_id, [status.value for status in ACTIVE]),
            )
            if await cur.fetchone() is not None:
                return "busy"
            await conn.execute("DELETE FROM workflows WHERE id = %s", (workflow_id,))
            return "deleted"
