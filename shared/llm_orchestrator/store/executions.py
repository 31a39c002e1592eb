"""Executions: creating one, reading it, and the conditional writes of its transitions.

Every state change an execution goes through is one conditional statement (or one
transaction) here, so two processes racing on the same execution (a pause against a park,
a cancel against the run's end) cannot both win. Only the execution lifecycle
(``executions.lifecycle``) calls the transitions. Step runs, parking and the step runner's
reads and writes are in ``store.step_runs``.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb

from llm_orchestrator.errors import Conflict, NotFound, ValidationFailed
from llm_orchestrator.executions.status import (
    ACTIVE,
    UNFINISHED,
    ExecutionStatus,
    StepStatus,
)
from llm_orchestrator.memo import IdentityCache
from llm_orchestrator.store.audit import outbox_insert_many
from llm_orchestrator.store.checkpoints import CheckpointRecord
from llm_orchestrator.store.db import Connection, Database, Read, Row, owner_clause
from llm_orchestrator.store.deadlines import request_deadlines, serving_request
from llm_orchestrator.store.step_runs import (
    StepRunRecord,
    close_running_steps,
    step_run_record,
    take_parked,
)
from llm_orchestrator.store.triggers import LIVE_EVENT_TRIGGERS, TriggerRecord, trigger_record

PINNED_JSON_CACHED = 64
_ACTIVE = [status.value for status in ACTIVE]
_UNFINISHED = [status.value for status in UNFINISHED]


@dataclass(frozen=True)
class ExecutionSummary:
    """An execution without its pinned definition and state machine: what a status read
    shows (those two are the bulk of a row, and JSON to decode)."""

    id: str
    workflow_id: uuid.UUID
    owner_id: str
    status: ExecutionStatus
    inputs: dict[str, Any]
    timeout_seconds: int
    pause_requested: bool
    cancel_requested: bool
    error: dict[str, Any] | None
    """Why it failed, was cancelled or timed out; on an active execution, the failure a
    step's failure handler recorded for the run's end to keep."""
    run_number: int
    created_at: datetime
    started_at: datetime
    completed_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class ExecutionRecord(ExecutionSummary):
    definition: dict[str, Any]
    state_machine: dict[str, Any]


_Execution = TypeVar("_Execution", bound=ExecutionSummary)
_SUMMARY_FIELDS = tuple(ExecutionSummary.__dataclass_fields__)
_SUMMARY_COLUMNS = ", ".join(_SUMMARY_FIELDS)


def _row_as(kind: type[_Execution], row: dict[str, Any]) -> _Execution:
    """An ``executions`` row (extra columns ignored) as ``kind``."""
    return kind(
        **{
            **{k: row[k] for k in kind.__dataclass_fields__},
            "status": ExecutionStatus(row["status"]),
        }
    )


def _step_run_of_json(run: dict[str, Any]) -> StepRunRecord:
    """A ``step_runs`` row as ``json_agg`` renders it (timestamps as ISO 8601 text)."""
    completed = run["completed_at"]
    return step_run_record(
        {
            **run,
            "started_at": datetime.fromisoformat(run["started_at"]),
            "completed_at": None if completed is None else datetime.fromisoformat(completed),
        }
    )


_SUMMARY_STATUS = list(ExecutionSummary.__dataclass_fields__).index("status")
_SUMMARY_WIDTH = len(ExecutionSummary.__dataclass_fields__)


def _with_runs(rows: list[Row]) -> tuple[ExecutionSummary, list[str], list[StepRunRecord]] | None:
    """A :meth:`ExecutionRepository.status_read` row: the summary's columns in order, then
    the step ids and the runs as ``json_agg`` renders them."""
    if not rows:
        return None
    row = rows[0]
    summary = list(row[:_SUMMARY_WIDTH])
    summary[_SUMMARY_STATUS] = ExecutionStatus(summary[_SUMMARY_STATUS])
    runs = [_step_run_of_json(run) for run in row[_SUMMARY_WIDTH + 1] or ()]
    return ExecutionSummary(*summary), row[_SUMMARY_WIDTH], runs


def ended_record(row: dict[str, Any], pinned: ExecutionRecord) -> ExecutionRecord:
    """An execution's summary columns (``StepRunRepository.complete_and_end``'s end) as
    its record, with ``pinned``'s definition and state machine (which never change)."""
    return _row_as(
        ExecutionRecord,
        {**row, "definition": pinned.definition, "state_machine": pinned.state_machine},
    )


def _execution(row: dict[str, Any]) -> ExecutionRecord:
    return _row_as(ExecutionRecord, row)


class ExecutionRepository:
    def __init__(self, db: Database) -> None:
        self._db = db
        self._pinned_json: IdentityCache[dict[str, Any], bytes] = IdentityCache(PINNED_JSON_CACHED)
        self._grouped = _GroupedInserts(db)
        self.runner_id: int | None = None
        """The runner (``store.runners``) this process is: every execution it creates or
        restores is written as its own, in the same statement, so no other runner can
        take it for an orphan. None: this process runs no executions of its own."""

    # -- executions ----------------------------------------------------------------------

    def transaction(self) -> AbstractAsyncContextManager[Connection]:
        """A pipelined transaction for a transition and what must commit with it (its audit
        event): pass the connection to the methods that take ``conn``."""
        return self._db.transaction(pipelined=True)

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
        conn: Connection | None = None,
        event: tuple[str, dict[str, Any]] | None = None,
    ) -> ExecutionRecord:
        """A new pending execution. Every column is written explicitly, so the record is
        known without reading it back: on a pipelined ``conn`` the insert costs no round
        trip of its own (it goes out with the transaction's next read or its commit).
        ``event`` (an outbox insert, ``AuditTrail.outbox_write``) is committed to the audit
        outbox by the same statement: one statement, no transaction around it."""
        record = ExecutionRecord(
            id=execution_id,
            workflow_id=workflow_id,
            owner_id=owner_id,
            status=ExecutionStatus.PENDING,
            inputs=inputs,
            definition=definition,
            state_machine=state_machine,
            timeout_seconds=timeout_seconds,
            pause_requested=False,
            cancel_requested=False,
            error=None,
            run_number=1,
            created_at=now,
            started_at=now,
            completed_at=None,
            updated_at=now,
        )
        pinned = (self._pinned(definition), self._pinned(state_machine))
        if conn is not None:
            sql, params = _insert(record, event, self.runner_id, pinned)
            await conn.execute(sql, params, prepare=True)
        elif event is not None and serving_request():
            # A request's, on its own, with its event: grouped with the submits made
            # meanwhile.
            await self._grouped.insert(_Insert(record, event, self.runner_id, pinned))
        else:
            # On its own: the lean statement path (no cursor, no context managers).
            await self._db.rows(*_insert(record, event, self.runner_id, pinned))
        return record

    def _pinned(self, document: dict[str, Any]) -> Jsonb:
        """``document`` (a pinned definition or compiled state machine, which executions of
        one workflow share as the very same object) as a jsonb parameter whose JSON text is
        encoded once per document, not once per execution: a 50-step chain's state machine
        is ~96 KB of JSON."""
        encoded = self._pinned_json.get(document, _encoded)
        return Jsonb(document, dumps=lambda _: encoded)

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

    def status_read(
        self,
        execution_id: str,
        *,
        owner_id: str | None = None,
        workflow_id: uuid.UUID | None = None,
    ) -> Read[tuple[ExecutionSummary, list[str], list[StepRunRecord]] | None]:
        """:meth:`get_with_runs` as a :class:`Read`."""
        clauses = ["id = %(r_execution)s"]
        params: dict[str, Any] = {"r_execution": execution_id}
        if owner_id is not None:
            clauses.append("owner_id = %(r_owner)s")
            params["r_owner"] = owner_id
        if workflow_id is not None:
            clauses.append("workflow_id = %(r_workflow)s")
            params["r_workflow"] = workflow_id
        return Read(
            f"SELECT {_SUMMARY_COLUMNS}, ARRAY(SELECT step ->> 'id'"
            " FROM jsonb_array_elements(definition -> 'steps') WITH ORDINALITY"
            " AS s (step, position) ORDER BY position) AS step_ids,"
            " (SELECT json_agg(r ORDER BY r.started_at, r.step_id) FROM step_runs r"
            "  WHERE r.execution_id = executions.id) AS step_runs"
            f" FROM executions WHERE {' AND '.join(clauses)}",
            params,
            _with_runs,
        )

    async def get_with_runs(
        self,
        execution_id: str,
        *,
        owner_id: str | None = None,
        workflow_id: uuid.UUID | None = None,
    ) -> tuple[ExecutionSummary, list[str], list[StepRunRecord]] | None:
        """The execution (as :meth:`get` filters it), its definition's step ids in order,
        and its step runs: one statement (a status read is the API's most frequent call).
        The pinned definition and state machine are not read (the step ids come out of the
        definition in the database), and the runs arrive as one JSON array: one row to
        decode rather than a second result set."""
        return await self._db.fetch(
            self.status_read(execution_id, owner_id=owner_id, workflow_id=workflow_id)
        )

    async def ids_with_status(self, statuses: tuple[ExecutionStatus, ...]) -> list[str]:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT id FROM executions WHERE status = ANY(%s) ORDER BY created_at, id",
                ([status.value for status in statuses],),
            )
            return [row["id"] for row in await cur.fetchall()]

    async def mark_running(self, execution_id: str) -> None:
        """A run has begun: pending becomes running (a paused one stays paused)."""
        async with self._db.connection() as conn:
            await conn.execute(
                "UPDATE executions SET status = %s, updated_at = now()"
                " WHERE id = %s AND status = %s",
                (ExecutionStatus.RUNNING.value, execution_id, ExecutionStatus.PENDING.value),
            )

    async def finish(
        self,
        execution_id: str,
        status: ExecutionStatus,
        *,
        error: dict[str, Any] | None,
        now: datetime,
        conn: Connection | None = None,
    ) -> ExecutionRecord | None:
        """Record the end of the run; None (nothing written) if the execution has ended.

        A failure recorded by :meth:`record_failure` decides the ending: ``failed``, with
        that error. Steps left running are closed as failed, with the execution's error.
        With ``conn`` (from :meth:`transaction`), all of it is part of that transaction.
        """
        if conn is not None:
            record = await _finish(conn, execution_id, status, error, now)
            if record is not None and record.status != ExecutionStatus.COMPLETED:
                await _after_failure(conn, execution_id, record.error, now)
            return record
        if status == ExecutionStatus.COMPLETED:
            # The common ending needs no step clean-up, so no transaction round trips either.
            async with self._db.connection() as conn:
                record = await _finish(conn, execution_id, status, None, now)
            if record is None or record.status == ExecutionStatus.COMPLETED:
                return record
            # A failure was recorded after all: clean up as for any other failure.
            async with self._db.transaction() as conn:
                await _after_failure(conn, execution_id, record.error, now)
            return record
        async with self._db.transaction() as conn:
            record = await _finish(conn, execution_id, status, error, now)
            if record is not None:
                await _after_failure(conn, execution_id, record.error, now)
        return record

    async def finish_recorded(
        self,
        execution_id: str,
        status: ExecutionStatus,
        *,
        error: dict[str, Any] | None,
        now: datetime,
        events: Mapping[ExecutionStatus, tuple[str, dict[str, Any]]],
        live_triggers: bool = False,
        pinned: ExecutionRecord | None = None,
    ) -> tuple[ExecutionRecord | None, list[TriggerRecord] | None]:
        """:meth:`finish` with its audit event, in one statement (no transaction around
        it): ``events`` holds the event's outbox insert (``AuditTrail.outbox_write``) for
        each status the execution may end with (``status``, or ``failed`` when a failure was
        recorded); the one that matches is committed to the audit outbox with the end. The
        running steps are closed and the parked tokens dropped by the same statement when
        the ending is not ``completed``. None (nothing written) if the execution has ended.
        With ``live_triggers`` the statement also reads the live event triggers
        (``store.triggers.LIVE_EVENT_TRIGGERS``, in their order), returned beside the
        execution for its completion event (None without). ``pinned``: the execution as it
        was started, whose definition and state machine (which never change) the returned
        record takes instead of reading them back (the bulk of the row: a 50-step chain's
        state machine is ~96 KB of JSON to send and decode)."""
        returned = "*" if pinned is None else _SUMMARY_COLUMNS

        def record_of(row: dict[str, Any]) -> ExecutionRecord:
            return _execution(row) if pinned is None else ended_record(row, pinned)

        params: dict[str, Any] = {
            "status": status.value,
            "failed_status": ExecutionStatus.FAILED.value,
            "error": Jsonb(error) if error is not None else None,
            "now": now,
            "id": execution_id,
            "active": _ACTIVE,
            "completed_status": ExecutionStatus.COMPLETED.value,
            "step_failed": StepStatus.FAILED.value,
            "step_running": StepStatus.RUNNING.value,
        }
        ctes = [
            "ended AS (UPDATE executions SET"
            " status = CASE WHEN error IS NULL THEN %(status)s ELSE %(failed_status)s END,"
            " error = COALESCE(error, %(error)s),"
            " completed_at = %(now)s, updated_at = %(now)s, pause_requested = false"
            " WHERE id = %(id)s AND status = ANY(%(active)s) RETURNING " + returned + ")",
            # What _after_failure does, for an ending other than completed.
            "closed AS (UPDATE step_runs r SET status = %(step_failed)s,"
            " error = COALESCE(r.error, ended.error), completed_at = %(now)s FROM ended"
            " WHERE r.execution_id = ended.id AND ended.status <> %(completed_status)s"
            " AND r.status = %(step_running)s)",
            "unparked AS (DELETE FROM parked_tasks t USING ended"
            " WHERE t.execution_id = ended.id AND ended.status <> %(completed_status)s)",
        ]
        for number, (ending, (audit_sql, audit_params)) in enumerate(events.items()):
            ctes.append(
                f"audit{number} AS ({audit_sql} FROM ended WHERE ended.status = %(ending{number})s)"
            )
            params.update(audit_params)
            params[f"ending{number}"] = ending.value
        sql = f"WITH {', '.join(ctes)} SELECT * FROM ended"
        if not live_triggers:
            async with self._db.connection() as conn:
                cur = await conn.execute(sql, params, prepare=True)
                row = await cur.fetchone()
            return (record_of(row) if row else None), None
        sql = (
            f"WITH {', '.join(ctes)} SELECT ended.*, t.id IS NOT NULL AS trigger__, t.*"
            f" FROM ended LEFT JOIN LATERAL ({LIVE_EVENT_TRIGGERS}) t ON TRUE"
            " ORDER BY t.created_at, t.id"
        )
        async with self._db.connection() as conn:
            tuples = conn.cursor(row_factory=tuple_row)
            await tuples.execute(sql, params, prepare=True)
            rows = await tuples.fetchall()
            names = [column.name for column in tuples.description or ()]
        if not rows:
            return None, None
        split = names.index("trigger__")
        record = record_of(dict(zip(names[:split], rows[0][:split], strict=True)))
        triggers = [
            trigger_record(dict(zip(names[split + 1 :], row[split + 1 :], strict=True)))
            for row in rows
            if row[split]
        ]
        return record, triggers

    async def request_pause(self, execution_id: str) -> ExecutionRecord | None:
        """pending/running → paused with the pause flag set; None if not in those statuses."""
        return await self._transition(
            execution_id,
            "status = %s, pause_requested = true",
            (ExecutionStatus.PAUSED.value,),
            UNFINISHED,
        )

    async def request_cancel(
        self,
        execution_id: str,
        *,
        error: dict[str, Any],
        now: datetime,
        conn: Connection | None = None,
    ) -> tuple[ExecutionRecord | None, list[str]]:
        """Active → cancelled with the cancel flag set, and the parked tokens taken.

        Returns the execution (None if it was not active) and the tokens to fail. With
        ``conn`` (from :meth:`transaction`), all of it is part of that transaction.
        """
        if conn is not None:
            return await _cancel(conn, execution_id, error, now)
        async with self._db.transaction() as own:
            return await _cancel(own, execution_id, error, now)

    async def request_resume(self, execution_id: str) -> tuple[ExecutionRecord | None, list[str]]:
        """paused → running with the pause flag cleared, and the parked tokens taken."""
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                "UPDATE executions SET status = %s, pause_requested = false,"
                " updated_at = now() WHERE id = %s AND status = %s RETURNING *",
                (ExecutionStatus.RUNNING.value, execution_id, ExecutionStatus.PAUSED.value),
            )
            row = await cur.fetchone()
            if row is None:
                return None, []
            tokens = await take_parked(conn, execution_id)
        return _execution(row), tokens

    async def _transition(
        self,
        execution_id: str,
        assignments: str,
        values: tuple[Any, ...],
        from_statuses: tuple[ExecutionStatus, ...],
    ) -> ExecutionRecord | None:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                f"UPDATE executions SET {assignments}, updated_at = now()"
                " WHERE id = %s AND status = ANY(%s) RETURNING *",
                (*values, execution_id, [status.value for status in from_statuses]),
            )
            row = await cur.fetchone()
        return _execution(row) if row else None

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
                "UPDATE executions SET status = %s, pause_requested = false,"
                " cancel_requested = false, error = NULL, completed_at = NULL,"
                " run_number = run_number + 1, updated_at = now(), runner_id = %s,"
                # The new run's first checkpoint extends this one (``store.step_runs``).
                " last_checkpoint_id = %s"
                " WHERE id = %s AND status <> ALL(%s) RETURNING *",
                (
                    ExecutionStatus.PENDING.value,
                    self.runner_id,
                    checkpoint.id,
                    execution_id,
                    _UNFINISHED,
                ),
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
                    " VALUES (%s, %s, %s, %s, %s, %s, 0, clock_timestamp())"
                    " ON CONFLICT (execution_id, step_id) DO UPDATE SET status = %s,"
                    " outputs = EXCLUDED.outputs, error = NULL",
                    (
                        execution_id,
                        step_id,
                        step_type,
                        provider,
                        StepStatus.COMPLETED.value,
                        Jsonb(outputs),
                        StepStatus.COMPLETED.value,
                    ),
                )
        return _execution(row)


_INSERT = (
    "INSERT INTO executions (id, workflow_id, owner_id, status, inputs, definition,"
    " state_machine, timeout_seconds, pause_requested, cancel_requested, error, run_number,"
    " created_at, started_at, completed_at, updated_at, runner_id)"
    " VALUES (%(id)s, %(workflow_id)s, %(owner_id)s, %(status)s, %(inputs)s, %(definition)s,"
    " %(state_machine)s, %(timeout_seconds)s, %(pause_requested)s, %(cancel_requested)s,"
    " NULL, %(run_number)s, %(created_at)s, %(started_at)s, NULL, %(updated_at)s,"
    " %(runner_id)s)"
)


GROUPED_AT_MOST = 64
"""The most inserts :class:`_GroupedInserts` sends in one statement."""


@dataclass(frozen=True)
class _Insert:
    """One execution's insert with its ``start`` event, as :func:`_insert` takes it."""

    record: ExecutionRecord
    event: tuple[str, dict[str, Any]]
    runner_id: int | None
    pinned: tuple[Jsonb, Jsonb]

    def statement(self) -> tuple[str, dict[str, Any]]:
        """This insert alone."""
        return _insert(self.record, self.event, self.runner_id, self.pinned)


class _GroupedInserts:
    """New executions' inserts (each with its audit event), sent as few statements as the
    load allows: an insert made while none of its kind is in flight goes at once, alone, as
    before; those made while one is in flight wait for it and then go together, as one
    statement (one round trip, one commit, each pinned document sent and parsed once), at
    most :data:`GROUPED_AT_MOST` at a time. A burst of submits thus costs the server and
    PostgreSQL a few statements rather than one per submit, and nothing waits when idle.
    Only a request's insert is grouped (its statement then goes with the request
    deadlines); one made in the background (a trigger's) goes alone, as before.

    Inserts are grouped by workflow and owner, each pair with its own queue: the rows an
    insert can wait on a lock for are its workflow's and its owner's (the foreign keys'
    checks; deleting a workflow's finished executions holds its row), so a group waits only
    where each of its inserts alone would have waited, and a workflow being deleted never
    holds the submits to another.

    An insert waits in its queue no longer than a request waits for a connection; past
    that it gives up with the same 503, unsent. Once sent, its statement has the request's
    deadlines.

    Each insert still commits with its own event (the same statement writes both). A
    statement of several that PostgreSQL refuses for a row's sake (a constraint, a value)
    is sent again row by row, so each insert gets its own answer and one bad row fails no
    other; any other failure (the database unavailable) is every insert's in it."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._queues: dict[tuple[uuid.UUID, str], _Queue] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def insert(self, row: _Insert) -> None:
        key = (row.record.workflow_id, row.record.owner_id)
        queue = self._queues.get(key)
        if queue is None:
            self._queues[key] = queue = _Queue()
            try:
                await self._db.rows(*row.statement())
            finally:
                self._next(key, queue)
            return
        loop = asyncio.get_running_loop()
        waited: asyncio.Future[None] = loop.create_future()
        entry = (row, waited)
        queue.waiting.append(entry)

        def give_up() -> None:
            # Still queued (not in a statement sent since): answered, and so never sent.
            if not waited.done() and any(other is entry for other in queue.waiting):
                waited.set_exception(self._db.no_connection_in_time())

        timer = loop.call_later(self._db.connection_wait_limit(), give_up)
        try:
            await waited
        finally:
            timer.cancel()

    def _next(self, key: tuple[uuid.UUID, str], queue: _Queue) -> None:
        """The inserts that waited go now (or nothing of this kind is in flight any more)."""
        waiting = [(row, waited) for row, waited in queue.waiting if not waited.done()]
        if not waiting:
            del self._queues[key]
            return
        group, queue.waiting = waiting[:GROUPED_AT_MOST], waiting[GROUPED_AT_MOST:]
        task = asyncio.get_running_loop().create_task(self._send(key, queue, group))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(
        self,
        key: tuple[uuid.UUID, str],
        queue: _Queue,
        group: list[tuple[_Insert, asyncio.Future[None]]],
    ) -> None:
        try:
            with request_deadlines():  # every insert in it is a request's
                await self._send_now([(r, w) for r, w in group if not w.done()])
        finally:
            self._next(key, queue)

    async def _send_now(self, group: list[tuple[_Insert, asyncio.Future[None]]]) -> None:
        """``group`` written, and each insert in it answered (also when this is cancelled:
        each still waiting is then cancelled too)."""
        try:
            try:
                if len(group) == 1:
                    await self._db.rows(*group[0][0].statement())
                elif group:
                    await self._db.rows(*_insert_many([row for row, _ in group]))
            except (Conflict, NotFound, ValidationFailed) as exc:
                if len(group) == 1:
                    _answer(group[0][1], exc)
                    return
                # Which row was refused is not known: each on its own, for its own answer.
                for row, waited in group:
                    try:
                        await self._db.rows(*row.statement())
                    except Exception as own:
                        _answer(waited, own)
                    else:
                        _answer(waited, None)
            except Exception as exc:  # every request in it answers that (a 503, say)
                for _, waited in group:
                    _answer(waited, exc)
            else:
                for _, waited in group:
                    _answer(waited, None)
        except BaseException:
            # Cancelled (the server stopping), even amid the retries: none is left waiting.
            for _, waited in group:
                _answer(waited, asyncio.CancelledError())
            raise


@dataclass
class _Queue:
    """The inserts of one workflow and owner waiting for the one in flight to be back."""

    waiting: list[tuple[_Insert, asyncio.Future[None]]] = field(default_factory=list)


def _answer(waited: asyncio.Future[None], exc: BaseException | None) -> None:
    if waited.done():
        return  # given up on (its request cancelled)
    if exc is None:
        waited.set_result(None)
    elif isinstance(exc, asyncio.CancelledError):
        waited.cancel()
    else:
        waited.set_exception(exc)


def _insert_many(rows: list[_Insert]) -> tuple[str, dict[str, Any]]:
    """One statement that inserts every row of ``rows`` with its event, in order; each
    distinct pinned document goes once, the rows naming theirs by position.

    The rows travel as one JSON document (an array of arrays) that the statement unpacks,
    not as an array parameter per column: psycopg adapts an array element by element in
    Python (a jsonb element also escaped once more as an array item), about 40 us of
    the server's CPU per row, where ``json.dumps`` of the lot costs a few. The pinned
    documents, encoded once already, are joined into one JSON array as they are."""
    documents: list[bytes] = []
    at: dict[int, int] = {}

    def position(document: Jsonb) -> int:
        known = at.get(id(document.obj))
        if known is None:
            known = at[id(document.obj)] = len(documents)
            documents.append(_json_text(document))
        return known

    audit_sql, params = outbox_insert_many([row.event for row in rows], prefix="audit_")
    values = [
        [
            r.id,
            str(r.workflow_id),
            r.owner_id,
            r.status.value,
            r.inputs,
            position(row.pinned[0]),
            position(row.pinned[1]),
            r.timeout_seconds,
            r.pause_requested,
            r.cancel_requested,
            r.run_number,
            r.created_at.isoformat(),
            r.started_at.isoformat(),
            r.updated_at.isoformat(),
            row.runner_id,
        ]
        for row in rows
        for r in (row.record,)
    ]
    joined = b"[" + b",".join(documents) + b"]"
    params["rows"] = json.dumps(values)
    params["documents"] = Jsonb(None, dumps=lambda _: joined)
    return f"WITH audit AS ({audit_sql}) {_INSERT_MANY}", params


def _json_text(document: Jsonb) -> bytes:
    """A pinned document's JSON text, as :meth:`ExecutionRepository._pinned` encoded it."""
    assert document.dumps is not None, "a pinned document without its encoded text"
    text = document.dumps(document.obj)
    return text.encode() if isinstance(text, str) else bytes(text)


# The columns of a row of ``_insert_many``'s JSON array, by position.
_INSERT_MANY = (
    "INSERT INTO executions (id, workflow_id, owner_id, status, inputs, definition,"
    " state_machine, timeout_seconds, pause_requested, cancel_requested, error, run_number,"
    " created_at, started_at, completed_at, updated_at, runner_id)"
    " SELECT r->>0, (r->>1)::uuid, r->>2, r->>3, r->4, d.docs->((r->>5)::int),"
    " d.docs->((r->>6)::int), (r->>7)::integer, (r->>8)::boolean, (r->>9)::boolean, NULL,"
    " (r->>10)::integer, (r->>11)::timestamptz, (r->>12)::timestamptz, NULL,"
    " (r->>13)::timestamptz, (r->>14)::integer"
    " FROM jsonb_array_elements(%(rows)s::jsonb) WITH ORDINALITY AS e (r, n),"
    " (SELECT %(documents)s::jsonb AS docs) d ORDER BY e.n"
)


def _encoded(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def _insert(
    record: ExecutionRecord,
    event: tuple[str, dict[str, Any]] | None,
    runner_id: int | None,
    pinned: tuple[Jsonb, Jsonb],
) -> tuple[str, dict[str, Any]]:
    """The statement that inserts ``record`` (and ``event`` into the audit outbox), and its
    parameters; ``pinned``: the definition and the state machine as parameters, made
    once."""
    definition, state_machine = pinned
    sql = _INSERT
    params: dict[str, Any] = {
        "id": record.id,
        "workflow_id": record.workflow_id,
        "owner_id": record.owner_id,
        "status": record.status.value,
        "inputs": Jsonb(record.inputs),
        "definition": definition,
        "state_machine": state_machine,
        "timeout_seconds": record.timeout_seconds,
        "pause_requested": record.pause_requested,
        "cancel_requested": record.cancel_requested,
        "run_number": record.run_number,
        "created_at": record.created_at,
        "started_at": record.started_at,
        "updated_at": record.updated_at,
        "runner_id": runner_id,
    }
    if event is not None:
        audit_sql, audit_params = event
        sql = f"WITH audit AS ({audit_sql}) {sql}"
        params.update(audit_params)
    return sql, params


async def _cancel(
    conn: Connection, execution_id: str, error: dict[str, Any], now: datetime
) -> tuple[ExecutionRecord | None, list[str]]:
    cur = await conn.execute(
        "UPDATE executions SET status = %s, cancel_requested = true,"
        " pause_requested = false, error = %s, completed_at = %s, updated_at = %s"
        " WHERE id = %s AND status = ANY(%s) RETURNING *",
        (ExecutionStatus.CANCELLED.value, Jsonb(error), now, now, execution_id, _ACTIVE),
    )
    row = await cur.fetchone()
    if row is None:
        return None, []
    tokens = await take_parked(conn, execution_id)
    await close_running_steps(conn, execution_id, error, now)
    return _execution(row), tokens


async def _finish(
    conn: Connection,
    execution_id: str,
    status: ExecutionStatus,
    error: dict[str, Any] | None,
    now: datetime,
) -> ExecutionRecord | None:
    # A recorded failure (a non-null error while active) decides the ending and its error.
    cur = await conn.execute(
        "UPDATE executions SET"
        " status = CASE WHEN error IS NULL THEN %s ELSE %s END,"
        " error = COALESCE(error, %s),"
        " completed_at = %s, updated_at = %s, pause_requested = false"
        " WHERE id = %s AND status = ANY(%s) RETURNING *",
        (
            status.value,
            ExecutionStatus.FAILED.value,
            Jsonb(error) if error is not None else None,
            now,
            now,
            execution_id,
            _ACTIVE,
        ),
    )
    row = await cur.fetchone()
    return _execution(row) if row else None


async def _after_failure(
    conn: Connection, execution_id: str, error: dict[str, Any] | None, now: datetime
) -> None:
    await close_running_steps(conn, execution_id, error, now)
    # A run that times out or fails while parked leaves its token behind; no resume can
    # answer it any more (the execution has ended).
    await take_parked(conn, execution_id)
