"""Executions, their step runs, checkpoints and parked task tokens.

Every state change an execution goes through is one conditional statement (or one
transaction) here, so two processes racing on the same execution (a pause against a park,
a retried step against its first delivery) cannot both win.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from llm_orchestrator.store.checkpoints import CheckpointRecord, insert_checkpoint
from llm_orchestrator.store.db import Connection, Database, owner_clause

ACTIVE_STATUSES = ("pending", "running", "paused")
TERMINAL_STATUSES = ("completed", "failed", "cancelled", "timed_out")


@dataclass(frozen=True)
class ExecutionRecord:
    id: str
    workflow_id: uuid.UUID
    owner_id: str
    status: str
    inputs: dict[str, Any]
    definition: dict[str, Any]
    state_machine: dict[str, Any]
    timeout_seconds: int
    pause_requested: bool
    cancel_requested: bool
    error: dict[str, Any] | None
    run_number: int
    created_at: datetime
    started_at: datetime
    completed_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class StepRunRecord:
    execution_id: str
    step_id: str
    step_type: str
    provider: str | None
    status: str
    outputs: dict[str, Any] | None
    error: dict[str, Any] | None
    attempts: int
    input_tokens: int | None
    output_tokens: int | None
    latency_ms: float | None
    started_at: datetime
    completed_at: datetime | None


@dataclass(frozen=True)
class StepContext:
    """What the step runner needs to run one step, read in one round trip."""

    status: str
    pause_requested: bool
    cancel_requested: bool
    inputs: dict[str, Any]
    step_status: str | None
    outputs: dict[str, dict[str, Any]]
    """Outputs of every completed step of the execution, by step id."""


@dataclass(frozen=True)
class StepUsage:
    input_tokens: int | None
    output_tokens: int | None
    latency_ms: float


def _build(cls: Any, row: dict[str, Any]) -> Any:
    return cls(**{k: row[k] for k in cls.__dataclass_fields__})


def _execution(row: dict[str, Any]) -> ExecutionRecord:
    record: ExecutionRecord = _build(ExecutionRecord, row)
    return record


class ExecutionRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- executions ----------------------------------------------------------------------

    async def create(
        self,
        *,
        execution_id: str,
        workflow_id: uuid.UUID,
        owner_id: str,
        inputs: dict[str, Any],
        definition: dict[str, Any],
        state_machine: dict[str, Any],
        timeout_seconds: int,
        now: datetime,
    ) -> ExecutionRecord:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "INSERT INTO executions (id, workflow_id, owner_id, status, inputs, definition,"
                " state_machine, timeout_seconds, created_at, started_at, updated_at)"
                " VALUES (%s, %s, %s, 'pending', %s, %s, %s, %s, %s, %s, %s) RETURNING *",
                (
                    execution_id,
                    workflow_id,
                    owner_id,
                    Jsonb(inputs),
                    Jsonb(definition),
                    Jsonb(state_machine),
                    timeout_seconds,
                    now,
                    now,
                    now,
                ),
            )
            row = await cur.fetchone()
        assert row is not None
        return _execution(row)

    async def get(
        self,
        execution_id: str,
        *,
        owner_id: str | None = None,
        workflow_id: uuid.UUID | None = None,
    ) -> ExecutionRecord | None:
        """The execution if it exists, ``owner_id`` (None: anyone) owns it and it belongs to
        ``workflow_id`` (None: any workflow)."""
        owner_sql, owner_params = owner_clause(owner_id)
        workflow_sql = "TRUE" if workflow_id is None else "workflow_id = %s"
        workflow_params = () if workflow_id is None else (workflow_id,)
        async with self._db.connection() as conn:
            cur = await conn.execute(
                f"SELECT * FROM executions WHERE id = %s AND {owner_sql} AND {workflow_sql}",
                (execution_id, *owner_params, *workflow_params),
            )
            row = await cur.fetchone()
        return _execution(row) if row else None

    async def ids_with_status(self, statuses: tuple[str, ...]) -> list[str]:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT id FROM executions WHERE status = ANY(%s) ORDER BY created_at, id",
                (list(statuses),),
            )
            return [row["id"] for row in await cur.fetchall()]

    async def mark_running(self, execution_id: str) -> None:
        """A run has begun: pending becomes running (a paused one stays paused)."""
        async with self._db.connection() as conn:
            await conn.execute(
                "UPDATE executions SET status = 'running', updated_at = now()"
                " WHERE id = %s AND status = 'pending'",
                (execution_id,),
            )

    async def finish(
        self,
        execution_id: str,
        status: str,
        *,
        error: dict[str, Any] | None,
        now: datetime,
    ) -> ExecutionRecord | None:
        """Record the end of the run; an execution already ended keeps its first ending.

        Steps left running are closed as failed, with the execution's error.
        """
        if status == "completed":
            # The common ending needs no step clean-up, so no transaction round trips either.
            async with self._db.connection() as conn:
                return await _finish(conn, execution_id, status, None, now)
        async with self._db.transaction() as conn:
            record = await _finish(conn, execution_id, status, error, now)
            if record is not None:
                await _close_running_steps(conn, execution_id, error, now)
                # A run that times out or fails while parked leaves its token behind; no
                # resume can answer it any more (the execution has ended).
                await _take_parked(conn, execution_id)
        return record

    async def request_pause(self, execution_id: str) -> ExecutionRecord | None:
        """pending/running → paused with the pause flag set; None if not in those statuses."""
        return await self._transition(
            execution_id,
            "status = 'paused', pause_requested = true",
            ("pending", "running"),
        )

    async def request_cancel(
        self, execution_id: str, *, error: dict[str, Any], now: datetime
    ) -> tuple[ExecutionRecord | None, list[str]]:
        """Active → cancelled with the cancel flag set, and the parked tokens taken.

        Returns the execution (None if it was not active) and the tokens to fail.
        """
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                "UPDATE executions SET status = 'cancelled', cancel_requested = true,"
                " pause_requested = false, error = %s, completed_at = %s, updated_at = %s"
                " WHERE id = %s AND status = ANY(%s) RETURNING *",
                (Jsonb(error), now, now, execution_id, list(ACTIVE_STATUSES)),
            )
            row = await cur.fetchone()
            if row is None:
                return None, []
            tokens = await _take_parked(conn, execution_id)
            await _close_running_steps(conn, execution_id, error, now)
        return _execution(row), tokens

    async def request_resume(self, execution_id: str) -> tuple[ExecutionRecord | None, list[str]]:
        """paused → running with the pause flag cleared, and the parked tokens taken."""
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                "UPDATE executions SET status = 'running', pause_requested = false,"
                " updated_at = now() WHERE id = %s AND status = 'paused' RETURNING *",
                (execution_id,),
            )
            row = await cur.fetchone()
            if row is None:
                return None, []
            tokens = await _take_parked(conn, execution_id)
        return _execution(row), tokens

    async def _transition(
        self, execution_id: str, assignments: str, from_statuses: tuple[str, ...]
    ) -> ExecutionRecord | None:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                f"UPDATE executions SET {assignments}, updated_at = now()"
                " WHERE id = %s AND status = ANY(%s) RETURNING *",
                (execution_id, list(from_statuses)),
            )
            row = await cur.fetchone()
        return _execution(row) if row else None

    # -- step runs -----------------------------------------------------------------------

    async def step_context(self, execution_id: str, step_id: str) -> StepContext | None:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT e.status, e.pause_requested, e.cancel_requested, e.inputs,"
                " (SELECT status FROM step_runs WHERE execution_id = e.id AND step_id = %s)"
                "   AS step_status,"
                " COALESCE((SELECT jsonb_object_agg(step_id, outputs) FROM step_runs"
                "   WHERE execution_id = e.id AND status = 'completed'), '{}'::jsonb)"
                "   AS outputs"
                " FROM executions e WHERE e.id = %s",
                (step_id, execution_id),
            )
            row = await cur.fetchone()
        if row is None:
            return None
        return StepContext(
            status=row["status"],
            pause_requested=row["pause_requested"],
            cancel_requested=row["cancel_requested"],
            inputs=row["inputs"],
            step_status=row["step_status"],
            outputs=row["outputs"],
        )

    async def definition(self, execution_id: str) -> dict[str, Any] | None:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT definition FROM executions WHERE id = %s", (execution_id,)
            )
            row = await cur.fetchone()
        return row["definition"] if row else None

    async def start_step(
        self, execution_id: str, step_id: str, *, step_type: str, provider: str | None
    ) -> bool:
        """Count an attempt of the step; False if it has completed meanwhile, or if the
        execution was cancelled or has ended since the caller read its flags."""
        async with self._db.connection() as conn:
            # FOR SHARE on the execution orders this against request_cancel / finish: either
            # they see the running step and close it, or this sees them and starts nothing
            # (else a step starting just as the execution is cancelled stays running).
            cur = await conn.execute(
                "WITH live AS (SELECT id FROM executions WHERE id = %s AND status = ANY(%s)"
                " AND NOT cancel_requested FOR SHARE)"
                " INSERT INTO step_runs (execution_id, step_id, step_type, provider, status,"
                " attempts) SELECT id, %s, %s, %s, 'running', 1 FROM live"
                " ON CONFLICT (execution_id, step_id) DO UPDATE SET status = 'running',"
                " attempts = step_runs.attempts + 1, error = NULL, started_at = now()"
                " WHERE step_runs.status <> 'completed' RETURNING attempts",
                (execution_id, list(ACTIVE_STATUSES), step_id, step_type, provider),
            )
            return await cur.fetchone() is not None

    async def complete_step(
        self,
        execution_id: str,
        step_id: str,
        *,
        outputs: dict[str, Any],
        usage: StepUsage,
        checkpoint_id: str,
    ) -> bool:
        """Outputs, status, usage and the automatic checkpoint, in one transaction.

        False (and nothing written) if the attempt is no longer running: another delivery
        completed it first, or the execution ended or was restored meanwhile.
        """
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                "UPDATE step_runs SET status = 'completed', outputs = %s, error = NULL,"
                " input_tokens = %s, output_tokens = %s, latency_ms = %s,"
                " completed_at = clock_timestamp()"
                # Only the attempt still running completes: a step that cancel, a timeout or
                # the fail handler has closed as failed meanwhile stays failed, and one that
                # a restore has dropped stays dropped (no row).
                " WHERE execution_id = %s AND step_id = %s AND status = 'running'"
                " RETURNING 1",
                (
                    Jsonb(outputs),
                    usage.input_tokens,
                    usage.output_tokens,
                    usage.latency_ms,
                    execution_id,
                    step_id,
                ),
            )
            if await cur.fetchone() is None:
                return False
            await insert_checkpoint(conn, checkpoint_id, execution_id, step_id, "auto")
        return True

    async def record_step_error(
        self, execution_id: str, step_id: str, error: dict[str, Any], *, final: bool
    ) -> None:
        """Keep the step's latest error; ``final`` marks it failed (no retry will follow)."""
        async with self._db.connection() as conn:
            await conn.execute(
                "UPDATE step_runs SET error = %s,"
                " status = CASE WHEN %s THEN 'failed' ELSE status END,"
                " completed_at = CASE WHEN %s THEN clock_timestamp() ELSE completed_at END"
                " WHERE execution_id = %s AND step_id = %s AND status <> 'completed'",
                (Jsonb(error), final, final, execution_id, step_id),
            )

    async def step_runs(self, execution_id: str) -> list[StepRunRecord]:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT * FROM step_runs WHERE execution_id = %s ORDER BY started_at, step_id",
                (execution_id,),
            )
            rows = await cur.fetchall()
        return [_build(StepRunRecord, row) for row in rows]

    # -- parking -------------------------------------------------------------------------

    async def park(self, execution_id: str, step_id: str | None, task_token: str) -> str:
        """Store the token of a step parked by a pause.

        Returns "parked", or "released" when the pause was lifted before the step got here
        (the caller answers the token itself), or "cancelled".
        """
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                "SELECT pause_requested, cancel_requested FROM executions WHERE id = %s FOR UPDATE",
                (execution_id,),
            )
            row = await cur.fetchone()
            if row is None or row["cancel_requested"]:
                return "cancelled"
            if not row["pause_requested"]:
                return "released"
            await conn.execute(
                "INSERT INTO parked_tasks (execution_id, step_id, task_token) VALUES (%s, %s, %s)"
                " ON CONFLICT (execution_id, step_id) DO UPDATE SET task_token ="
                " EXCLUDED.task_token, parked_at = now()",
                (execution_id, step_id or "", task_token),
            )
            await conn.execute(
                "UPDATE executions SET status = 'paused', updated_at = now()"
                " WHERE id = %s AND status IN ('pending', 'running')",
                (execution_id,),
            )
        return "parked"

    async def restore(
        self, execution_id: str, checkpoint: CheckpointRecord
    ) -> ExecutionRecord | None:
        """Put the execution back to the checkpoint's state as a new pending run.

        Steps completed at the checkpoint get its outputs back; every other step run is
        forgotten, so the next run executes exactly the steps after the checkpoint.
        None if the execution is still running (pending/running).
        """
        steps: dict[str, Any] = checkpoint.snapshot.get("steps", {})
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                "UPDATE executions SET status = 'pending', pause_requested = false,"
                " cancel_requested = false, error = NULL, completed_at = NULL,"
                " run_number = run_number + 1, updated_at = now()"
                " WHERE id = %s AND status <> ALL(%s) RETURNING *",
                (execution_id, ["pending", "running"]),
            )
            row = await cur.fetchone()
            if row is None:
                return None
            await conn.execute("DELETE FROM parked_tasks WHERE execution_id = %s", (execution_id,))
            await conn.execute(
                "DELETE FROM step_runs WHERE execution_id = %s AND NOT (step_id = ANY(%s))",
                (execution_id, list(steps)),
            )
            kinds = {step["id"]: step for step in row["definition"].get("steps", [])}
            for step_id, outputs in steps.items():
                step = kinds.get(step_id, {})
                step_type = step.get("type", "llm")
                provider = step.get("provider") or step.get("database")
                # An upsert, not an update: an earlier restore to an earlier checkpoint may
                # have deleted this step's row, and a step of the checkpoint must come back
                # completed or the new run would call its provider again.
                await conn.execute(
                    "INSERT INTO step_runs (execution_id, step_id, step_type, provider, status,"
                    " outputs, attempts, completed_at)"
                    " VALUES (%s, %s, %s, %s, 'completed', %s, 0, clock_timestamp())"
                    " ON CONFLICT (execution_id, step_id) DO UPDATE SET status = 'completed',"
                    " outputs = EXCLUDED.outputs, error = NULL",
                    (execution_id, step_id, step_type, provider, Jsonb(outputs)),
                )
        return _execution(row)


async def _finish(
    conn: Connection,
    execution_id: str,
    status: str,
    error: dict[str, Any] | None,
    now: datetime,
) -> ExecutionRecord | None:
    cur = await conn.execute(
        "UPDATE executions SET status = %s, error = COALESCE(%s, error),"
        " completed_at = %s, updated_at = %s, pause_requested = false"
        " WHERE id = %s AND status = ANY(%s) RETURNING *",
        (
            status,
            Jsonb(error) if error is not None else None,
            now,
            now,
            execution_id,
            list(ACTIVE_STATUSES),
        ),
    )
    row = await cur.fetchone()
    return _execution(row) if row else None


async def _take_parked(conn: Connection, execution_id: str) -> list[str]:
    cur = await conn.execute(
        "DELETE FROM parked_tasks WHERE execution_id = %s RETURNING task_token", (execution_id,)
    )
    return [row["task_token"] for row in await cur.fetchall()]


async def _close_running_steps(
    conn: Connection, execution_id: str, error: dict[str, Any] | None, now: datetime
) -> None:
    await conn.execute(
        "UPDATE step_runs SET status = 'failed', error = COALESCE(error, %s), completed_at = %s"
        " WHERE execution_id = %s AND status = 'running'",
        (Jsonb(error) if error is not None else None, now, execution_id),
    )
