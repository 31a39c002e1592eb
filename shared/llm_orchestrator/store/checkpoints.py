"""Checkpoints: snapshots of an execution's inputs and completed steps' outputs.

The step runner writes one automatically with each completed step (in the same transaction
as the step's outputs, see ``store.step_runs``), keeping that step's outputs and naming the
checkpoint it extends; users add more on demand, each a whole snapshot. They are stored in
``checkpoint_rows``; the ``checkpoints`` view shows each with its whole snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from llm_orchestrator.executions.status import StepStatus
from llm_orchestrator.store.db import Connection, Database, fetch_page

# The snapshot a checkpoint stores: the inputs and every completed step's outputs, built by
# the database in the same statement that inserts the checkpoint.
_SNAPSHOT_SQL = (
    """
jsonb_build_object(
    'inputs', (SELECT inputs FROM executions WHERE id = %(execution_id)s),
    'steps', COALESCE((
        SELECT jsonb_object_agg(step_id, outputs ORDER BY completed_at, step_id)
        FROM step_runs
        WHERE execution_id = %(execution_id)s AND status = '"""
    + StepStatus.COMPLETED.value
    + """'
    ), '{}'::jsonb)
)
"""
)


@dataclass(frozen=True)
class CheckpointRecord:
    id: str
    execution_id: str
    step_id: str | None
    kind: str
    snapshot: dict[str, Any]
    created_at: datetime


def _checkpoint(row: dict[str, Any]) -> CheckpointRecord:
    return CheckpointRecord(**{k: row[k] for k in CheckpointRecord.__dataclass_fields__})


class CheckpointRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_checkpoint(
        self, checkpoint_id: str, execution_id: str, step_id: str | None
    ) -> CheckpointRecord:
        async with self._db.connection() as conn:
            return await insert_checkpoint(conn, checkpoint_id, execution_id, step_id, "manual")

    async def get_checkpoint(self, checkpoint_id: str) -> CheckpointRecord | None:
        async with self._db.connection() as conn:
            cur = await conn.execute("SELECT * FROM checkpoints WHERE id = %s", (checkpoint_id,))
            row = await cur.fetchone()
        return _checkpoint(row) if row else None

    async def list_checkpoints(
        self, execution_id: str, *, limit: int, offset: int
    ) -> tuple[list[CheckpointRecord], int]:
        async with self._db.connection() as conn:
            rows, total = await fetch_page(
                conn,
                # The stored rows: the whole snapshots of the page's rows only are read
                # below, not of every checkpoint before them (each is a walk up its chain).
                source="checkpoint_rows",
                where="execution_id = %s",
                params=(execution_id,),
                order_by="created_at, id",
                limit=limit,
                offset=offset,
            )
            chained = [row["id"] for row in rows if row["parent_id"] is not None]
            if chained:
                cur = await conn.execute(_ANCESTRY_SQL, (chained,))
                stored = {row["id"]: row for row in await cur.fetchall()}
                merged: dict[str, dict[str, Any]] = {}
                for row in rows:
                    if row["parent_id"] is not None:
                        steps = _merged_steps(row["id"], stored, merged)
                        # In jsonb's key order, as every other read of a snapshot gives it.
                        row["snapshot"] = {"steps": steps, "inputs": row["snapshot"].get("inputs")}
        return [_checkpoint(r) for r in rows], total


async def insert_checkpoint(
    conn: Connection, checkpoint_id: str, execution_id: str, step_id: str | None, kind: str
) -> CheckpointRecord:
    cur = await conn.execute(
        "INSERT INTO checkpoint_rows (id, execution_id, step_id, kind, snapshot)"
        " VALUES (%(id)s, %(execution_id)s, %(step_id)s, %(kind)s, " + _SNAPSHOT_SQL + ")"
        " RETURNING *",
        {"id": checkpoint_id, "execution_id": execution_id, "step_id": step_id, "kind": kind},
    )
    row = await cur.fetchone()
    assert row is not None
    return _checkpoint(row)


_ANCESTRY_SQL = (
    # Every checkpoint up the chains of the page's rows, each once however many of the
    # page's rows it is an ancestor of (UNION, which also ends a cycle made by hand).
    "WITH RECURSIVE up (id, parent_id) AS ("
    " SELECT id, parent_id FROM checkpoint_rows WHERE id = ANY(%s::text[])"
    " UNION SELECT c.id, c.parent_id FROM checkpoint_rows c JOIN up ON c.id = up.parent_id)"
    " SELECT up.id, up.parent_id, c.snapshot -> 'steps' AS steps"
    " FROM up JOIN checkpoint_rows c ON c.id = up.id"
)
"""A page's snapshots in one walk: each row's own ``checkpoint_snapshot`` walked its whole
chain again, so a page of 100 checkpoints of a 500-step chain took 2 s instead of 50 ms."""


def _merged_steps(
    checkpoint_id: str, stored: dict[str, Any], merged: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The steps of ``checkpoint_id``'s whole snapshot, as ``checkpoint_snapshot`` (migration
    0081) builds them: every checkpoint's up its chain, the nearest one's outputs winning,
    keys in jsonb's order (shorter first, then by bytes) so the JSON is the same. ``merged``
    keeps the steps of each one asked for, where the page's later rows stop their walk."""
    chain: list[str] = []
    seen: set[str] = set()
    current: str | None = checkpoint_id
    # Up to a checkpoint built already, a whole one, or one that is not there (as the
    # function's walk, which also ends there); a cycle made by hand ends where it closes.
    while current is not None and current not in merged and current in stored:
        if current in seen:
            break
        seen.add(current)
        chain.append(current)
        current = stored[current]["parent_id"]
    steps: dict[str, Any] = dict(merged[current]) if current in merged else {}
    for link in reversed(chain):
        steps.update(stored[link]["steps"] or {})
    merged[checkpoint_id] = steps
    return dict(sorted(steps.items(), key=_jsonb_key_order))


def _jsonb_key_order(item: tuple[str, Any]) -> tuple[int, bytes]:
    key = item[0].encode()
    return len(key), key
