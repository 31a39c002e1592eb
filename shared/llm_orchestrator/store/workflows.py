"""Workflow definitions, owned by users."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from psycopg.types.json import Jsonb

from llm_orchestrator.executions.status import ACTIVE
from llm_orchestrator.store.db import Database, Read, Row, owner_clause

T = TypeVar("T")


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
_RECORD_FIELDS = tuple(WorkflowRecord.__dataclass_fields__)
_RECORD_COLUMNS = ", ".join(_RECORD_FIELDS)


def _list_filter(
    owner_id: str | None, name: str | None, version: str | None
) -> tuple[str, dict[str, Any]]:
    clauses = ["TRUE" if owner_id is None else "owner_id = %(r_owner)s"]
    params: dict[str, Any] = {} if owner_id is None else {"r_owner": owner_id}
    if name:
        escaped = name.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append("lower(name) LIKE %(r_name)s")
        params["r_name"] = f"%{escaped}%"
    if version:
        clauses.append("version = %(r_version)s")
        params["r_version"] = version
    return " AND ".join(clauses), params


def _page_of_headers(rows: list[Row]) -> tuple[list[WorkflowHeader], int] | None:
    if not rows:
        return None
    return [WorkflowHeader(*row[:-1]) for row in rows], int(rows[0][-1])


def _first_page_of_headers(rows: list[Row]) -> tuple[list[WorkflowHeader], int]:
    return _page_of_headers(rows) or ([], 0)


def _single_value(rows: list[Row]) -> Any:
    return rows[0][0]


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

    async def get_with(
        self, workflow_id: uuid.UUID, *, owner_id: str | None, ride: Read[T]
    ) -> tuple[WorkflowRecord | None, T]:
        """:meth:`get`, and ``ride`` (a read of at most one row) in the same statement."""
        return await self._db.fetch(self.get_with_read(workflow_id, owner_id=owner_id, ride=ride))

    def get_with_read(
        self, workflow_id: uuid.UUID, *, owner_id: str | None, ride: Read[T]
    ) -> Read[tuple[WorkflowRecord | None, T]]:
        """:meth:`get_with` as a :class:`Read` (one row), which may itself ride on the
        statement that authenticates a request. The workflow's columns come last, in a
        fixed number, so its rows are split without their names."""
        params: dict[str, Any] = {"w_id": workflow_id, **ride.params}
        owner_sql = ""
        if owner_id is not None:
            owner_sql = " AND owner_id = %(w_owner)s"
            params["w_owner"] = owner_id
        sql = (
            f"SELECT r.*, w.* FROM (SELECT) one{ride.lateral()}"
            f" LEFT JOIN LATERAL (SELECT TRUE AS found__, {_RECORD_COLUMNS} FROM workflows"
            f" WHERE id = %(w_id)s{owner_sql}) w ON TRUE"
        )

        def decode(rows: list[Row]) -> tuple[WorkflowRecord | None, T]:
            row = rows[0]
            split = len(row) - len(_RECORD_FIELDS) - 1
            record = None
            if row[split]:
                record = WorkflowRecord(*row[split + 1 :])
            return record, ride.carried([row[:split]], 0)

        return Read(sql, params, decode)

    def list_read(
        self,
        *,
        owner_id: str | None,
        name: str | None,
        version: str | None,
        limit: int,
        offset: int,
    ) -> Read[tuple[list[WorkflowHeader], int] | None]:
        """One page of headers and the total that matches, as a :class:`Read` (None for a
        page past the end, which has no row to carry the total). The definitions (the bulk
        of a row, and JSON to decode) are not read."""
        where, params = _list_filter(owner_id, name, version)
        # The total rides on every row of the page (one round trip).
        return Read(
            f"SELECT {_HEADER_COLUMNS}, count(*) OVER () FROM workflows WHERE {where}"
            " ORDER BY created_at, id LIMIT %(r_limit)s OFFSET %(r_offset)s",
            {**params, "r_limit": limit, "r_offset": offset},
            _page_of_headers if offset else _first_page_of_headers,
        )

    async def list(
        self,
        *,
        owner_id: str | None,
        name: str | None,
        version: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[WorkflowHeader], int]:
        """One page of headers (:meth:`list_read`), and the total."""
        page = await self._db.fetch(
            self.list_read(
                owner_id=owner_id, name=name, version=version, limit=limit, offset=offset
            )
        )
        if page is not None:
            return page
        # Past the end: no row carried the total.
        where, params = _list_filter(owner_id, name, version)
        count = Read(f"SELECT count(*) FROM workflows WHERE {where}", params, _single_value)
        return [], int(await self._db.fetch(count))

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
