"""What a long-poll compares: an execution's status and its steps' statuses, in one read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llm_orchestrator.store.db import Database


@dataclass(frozen=True)
class ExecutionSignature:
    """Changes whenever the execution's status or any step's status does."""

    status: str
    steps: frozenset[tuple[str, str]]
    """``(step_id, status)`` of every step run so far."""


class ExecutionWatchRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def signature(self, execution_id: str) -> ExecutionSignature | None:
        """One indexed round trip; None when the execution no longer exists."""
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT e.status,"
                " ARRAY(SELECT step_id FROM step_runs WHERE execution_id = e.id"
                "   ORDER BY step_id) AS step_ids,"
                " ARRAY(SELECT status FROM step_runs WHERE execution_id = e.id"
                "   ORDER BY step_id) AS step_statuses"
                " FROM executions e WHERE e.id = %s",
                (execution_id,),
            )
            row = await cur.fetchone()
        if row is None:
            return None
        steps = zip(row["step_ids"], row["step_statuses"], strict=True)
        return ExecutionSignature(row["status"], frozenset(steps))
