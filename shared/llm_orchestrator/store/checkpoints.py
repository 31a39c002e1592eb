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
                cur = await conn.execute(
                    "SELECT id, checkpoint_snapshot(id) AS snapshot FROM unnest(%s::text[]) AS id",
                    (chained,),
                )
                whole = {row["id"]: row["snapshot"] for row in await cur.fetchall()}
                for row in rows:
                    row["snapshot"] = whole.get(row["id"], row["snapshot"])
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
