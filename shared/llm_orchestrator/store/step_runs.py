"""Step runs: what the step runner reads and writes, and parked task tokens.

A step's outputs, status, usage and automatic checkpoint are written in one transaction;
each write is conditional, so a retried or duplicated delivery of a step, or one racing a
cancel, a restore or the run's end, cannot both win (see each method).

The statements every step sends are prepared on their first use on a connection
(``prepare=True``; psycopg waits for five): each is long, and until it is prepared
PostgreSQL parses and plans it anew every time, which a burst of executions on freshly
opened pool connections pays for most.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from psycopg.types.json import Jsonb

from llm_orchestrator.executions.status import ACTIVE, ExecutionStatus, StepStatus
from llm_orchestrator.store.db import Connection, Database
from llm_orchestrator.store.fence import RUN_FENCE, FencedOff
from llm_orchestrator.store.triggers import LIVE_EVENT_TRIGGERS, TriggerRecord
from llm_orchestrator.store.usage import (
    LEDGER_CTES,
    BudgetSetting,
    CallRow,
    PriceRow,
    float_or_none,
    ledger_ctes,
    ledger_parameters,
)

_ACTIVE = [status.value for status in ACTIVE]


@dataclass(frozen=True)
class StepRunRecord:
    execution_id: str
    step_id: str
    step_type: str
    provider: str | None
    status: StepStatus
    outputs: dict[str, Any] | None
    error: dict[str, Any] | None
    attempts: int
    input_tokens: int | None
    output_tokens: int | None
    latency_ms: float | None
    started_at: datetime
    completed_at: datetime | None
    calls: list[dict[str, Any]] | None = None
    """Every provider call of the run, priced (``store/usage.py``); None before the first."""


@dataclass(frozen=True)
class StepContext:
    """What the step runner needs to run one step, read in one round trip."""

    status: ExecutionStatus
    pause_requested: bool
    cancel_requested: bool
    inputs: dict[str, Any]
    step_status: StepStatus | None
    outputs: dict[str, dict[str, Any]]
    """Outputs of every completed step of the execution, by step id."""
    budget: BudgetSetting | None = None
    """The owner's budget setting when a month was asked for (None: not asked, or no owner).
    Not its spend: a step whose budget applies reads the spend right before its call
    (``Budgets.step_refusal``)."""
    prices: tuple[PriceRow, ...] = ()
    """The price overrides of the ``(provider, model)`` pairs asked for."""


@dataclass(frozen=True)
class StepUsage:
    input_tokens: int | None
    output_tokens: int | None
    latency_ms: float


def step_run_record(row: dict[str, Any]) -> StepRunRecord:
    return StepRunRecord(
        **{
            **{k: row[k] for k in StepRunRecord.__dataclass_fields__},
            "status": StepStatus(row["status"]),
        }
    )


@dataclass(frozen=True)
class RunEnd:
    """The execution's end, for the statement that commits its run's last step to write
    too (:meth:`StepRunRepository.complete_and_end`)."""

    now: datetime
    """Its ``completed_at``."""
    event: tuple[str, dict[str, Any]] | None = None
    """The ``finish`` audit event's outbox insert (``AuditTrail.outbox_write``), committed
    with the end; None when there is no audit trail."""
    live_triggers: bool = False
    """Whether to read the live event triggers with the end (``store.triggers``)."""


@dataclass(frozen=True)
class RunEnded:
    """The end :meth:`StepRunRepository.complete_and_end` wrote."""

    row: dict[str, Any]
    """The execution as it ended: an ``ExecutionSummary``'s columns."""
    triggers: list[TriggerRecord] | None
    """The live event triggers (asked for with ``RunEnd.live_triggers``), else None."""


@dataclass(frozen=True)
class NextStep:
    """The step to begin in the statement that completes the one before it
    (:meth:`StepRunRepository.complete_and_begin`); fields as :meth:`~StepRunRepository.begin_step`
    takes them."""

    step_id: str
    step_type: str
    provider: str | None
    month: date | None = None
    price_keys: Sequence[tuple[str, str]] = ()


# The pieces of a step's begin, shared by begin_step and complete_and_begin. The execution
# row is locked first: request_cancel and finish lock it before the step runs, so either
# they see the step running and close it, or the begin sees them and starts nothing. The
# lock is FOR NO KEY UPDATE, not FOR SHARE, because a begin may update the row (``running``:
# a pending execution's first step marks it running): two first steps of a Parallel
# beginning at once would each hold a share lock and wait for the other's to update the row,
# a deadlock PostgreSQL breaks by failing one of them. Begins of one execution queue instead.
_LOCKED_EXECUTION = (
    "e AS (SELECT id, owner_id, status, pause_requested, cancel_requested,"
    " inputs, last_checkpoint_id FROM executions WHERE id = %(execution_id)s"
    " AND COALESCE(runner_id=%(rid)s,%(rid)s IS NULL) FOR NO KEY UPDATE)"
)
# The fence (``rid``): a run of a runner (``store.fence.RUN_FENCE``; NULL elsewhere, and
# then nothing is fenced) sees no execution once the execution is not that runner's: a
# runner that took it over (this one's lease was lost, noticed or not) wrote ``runner_id``
# under this row lock, so the stale run can neither begin nor commit a step (FencedOff).
# Kept this short: the completion with the next begin is near psycopg's 4,096-character
# statement cache (see ``_compact``).
_BEGIN = (
    "started AS (INSERT INTO step_runs (execution_id, step_id, step_type,"
    "   provider, status, attempts)"
    "   SELECT id, %(step)s, %(type)s, %(provider)s, %(running_step)s, 1 FROM e"
    "   WHERE e.status = ANY(%(active)s) AND NOT e.cancel_requested"
    "   AND NOT e.pause_requested{guard}"
    "   ON CONFLICT (execution_id, step_id) DO UPDATE SET status = %(running_step)s,"
    "   attempts = step_runs.attempts + 1, error = NULL, started_at = now()"
    "   WHERE step_runs.status <> %(completed_step)s RETURNING attempts)"
)
# The first step to begin marks a pending execution running (mark_running's write). Not in
# a chained begin: the step completed before it began in the same run, which marked the
# execution running then (a restore in between would have left that step's attempt
# uncommittable: no completion, so no begin), and ``last`` updates the same row, which one
# statement may update only once.
_RUNNING = (
    " running AS (UPDATE executions SET status = %(running_execution)s,"
    "   updated_at = now()"
    "   WHERE id = %(execution_id)s AND status = %(pending_execution)s"
    "   AND EXISTS (SELECT 1 FROM started))"
)
# The inputs are not among them: a begin reads them (``_BEGIN_SQL``), a chained begin has
# the caller's (they never change).
_CONTEXT = (
    " e.status, e.pause_requested, e.cancel_requested,"
    " EXISTS (SELECT 1 FROM started) AS started,"
    " CASE WHEN %({month})s::date IS NOT NULL THEN e.owner_id END AS budget_user,"
    " ub.user_id IS NOT NULL AS budget_explicit, ub.monthly_usd AS budget_monthly,"
    " (SELECT jsonb_agg(jsonb_build_array(p.provider, p.model,"
    "   p.input_usd_per_million, p.output_usd_per_million))"
    "   FROM model_prices p WHERE (p.provider, p.model) IN"
    "   (SELECT * FROM jsonb_to_recordset(%(price_keys)s::jsonb) AS k (provider text, model text)))"
    "   AS prices"
)
# The owner's budget setting, not their spend: summing the spend's shard rows at every
# step's begin was for a budget that applies only, and such a step reads the spend again
# right before its call anyway (``StepRunner._checked``). The owner is a user (the foreign
# key says so): their budget row alone is read, not their user row.
_CONTEXT_FROM = (
    " FROM e LEFT JOIN user_budgets ub ON ub.user_id = e.owner_id AND %({month})s::date IS NOT NULL"
)
# The automatic checkpoint of a completed step. It extends the checkpoint the execution's
# previous commit wrote (or the one it was restored to): ``executions.last_checkpoint_id``,
# read from the row ``e`` has locked, so the commits of one execution (the branches of a
# Parallel too) each extend the one before, and the snapshot read back from the chain
# (``checkpoint_snapshot``, migration 0081) has every step completed before this one plus
# this one: what this statement used to copy in whole, every step's outputs again at every
# step. With no previous checkpoint (a run's first commit, or one begun before checkpoints
# had parents) its steps are every completed step, as before.
_CHECKPOINT = (
    "snap AS (SELECT jsonb_build_object('inputs', e.inputs, 'steps',"
    "   CASE WHEN e.last_checkpoint_id IS NULL THEN COALESCE((SELECT"
    "   jsonb_object_agg(step_id, outputs) FROM step_runs WHERE execution_id = e.id"
    "   AND status = %(completed_step)s AND step_id <> %(step_id)s), '{{}}') ELSE '{{}}' END"
    "   || jsonb_build_object(%(step_id)s::text, %(outputs)s)) AS snapshot FROM e),"
    " ckpt AS (INSERT INTO checkpoint_rows (id, execution_id, step_id, kind, snapshot, parent_id)"
    " SELECT %(checkpoint_id)s, e.id, %(step_id)s, 'auto', snap.snapshot,"
    " e.last_checkpoint_id FROM done, snap, e{guard} RETURNING 1),"
)
_LAST = (
    " last AS (UPDATE executions SET last_checkpoint_id = %(checkpoint_id)s"
    "   WHERE id = %(execution_id)s AND EXISTS (SELECT 1 FROM ckpt))"
)
# The run's last step (``complete_and_end``): the same update of the execution's row also
# writes its end (a statement may update a row only once), when the execution is still
# active with no failure recorded (``e.ends``, read under the row's lock): ``completed``, as
# ``ExecutionRepository.finish`` writes it. Otherwise only the checkpoint, and the run's end
# is for ``finish`` to write, as before.
_LAST_ENDING = (
    " last AS (UPDATE executions x SET last_checkpoint_id = %(checkpoint_id)s,"
    "   status = CASE WHEN e.ends THEN %(completed_execution)s ELSE x.status END,"
    "   completed_at = CASE WHEN e.ends THEN %(end_now)s ELSE x.completed_at END,"
    "   updated_at = CASE WHEN e.ends THEN %(end_now)s ELSE x.updated_at END,"
    "   pause_requested = x.pause_requested AND NOT e.ends"
    "   FROM e WHERE x.id = e.id AND EXISTS (SELECT 1 FROM ckpt)"
    "   RETURNING e.ends, {columns})"
)


def _begin_parameters(
    step_id: str,
    step_type: str,
    provider: str | None,
    month: date | None,
    price_keys: Sequence[tuple[str, str]],
    *,
    month_name: str = "month",
) -> dict[str, Any]:
    return {
        "rid": RUN_FENCE.get(),
        "step": step_id,
        "type": step_type,
        "provider": provider,
        month_name: month,
        "price_keys": _price_keys_json(tuple(price_keys)),
    }


@functools.lru_cache(maxsize=1024)
def _price_keys_json(price_keys: tuple[tuple[str, str], ...]) -> str:
    """The ``(provider, model)`` pairs as the JSON text the begin reads them from: a step
    asks for the same few pairs every time, and one text parameter costs less to adapt
    than two arrays."""
    return json.dumps([{"provider": provider, "model": model} for provider, model in price_keys])


def _context(
    row: dict[str, Any],
    outputs: dict[str, dict[str, Any]] | None = None,
    inputs: dict[str, Any] | None = None,
) -> StepContext:
    budget = None
    if row["budget_user"] is not None:
        budget = BudgetSetting(
            row["budget_user"],
            row["budget_explicit"],
            float_or_none(row["budget_monthly"]),
        )
    return StepContext(
        status=ExecutionStatus(row["status"]),
        pause_requested=row["pause_requested"],
        cancel_requested=row["cancel_requested"],
        inputs=row["inputs"] if inputs is None else inputs,
        step_status=StepStatus(row["step_status"]) if row.get("step_status") else None,
        outputs=row["outputs"] if outputs is None else outputs,
        budget=budget,
        prices=tuple(
            PriceRow(provider, model, float(input_usd), float(output_usd))
            for provider, model, input_usd, output_usd in row["prices"] or ()
        ),
    )


class StepRunRepository:
    """The step runner's store (its ``StepStore``), and the step runs an execution shows."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def step_context(self, execution_id: str, step_id: str) -> StepContext | None:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT e.status, e.pause_requested, e.cancel_requested, e.inputs,"
                " (SELECT status FROM step_runs WHERE execution_id = e.id AND step_id = %s)"
                "   AS step_status,"
                " COALESCE((SELECT jsonb_object_agg(step_id, outputs) FROM step_runs"
                "   WHERE execution_id = e.id AND status = %s), '{}'::jsonb)"
                "   AS outputs"
                " FROM executions e WHERE e.id = %s",
                (step_id, StepStatus.COMPLETED.value, execution_id),
            )
            row = await cur.fetchone()
        if row is None:
            return None
        return StepContext(
            status=ExecutionStatus(row["status"]),
            pause_requested=row["pause_requested"],
            cancel_requested=row["cancel_requested"],
            inputs=row["inputs"],
            step_status=StepStatus(row["step_status"]) if row["step_status"] else None,
            outputs=row["outputs"],
        )

    async def begin_step(
        self,
        execution_id: str,
        step_id: str,
        *,
        step_type: str,
        provider: str | None,
        month: date | None = None,
        price_keys: Sequence[tuple[str, str]] = (),
    ) -> tuple[StepContext | None, bool]:
        """The step's context (as :meth:`step_context`) and, when the step may run, its
        attempt counted as :meth:`start_step` does: one round trip, one statement.

        With ``month``, the context also carries the owner's budget setting (whether a
        budget check before a provider call is needed); with ``price_keys``, the price
        overrides of those ``(provider, model)`` pairs (what pricing the calls needs).

        Returns ``(context, started)``. ``started`` is False when the execution is missing,
        cancelled, paused or not active, or the step has completed; the context shows which
        (read as of the statement's start), and a race it cannot show is for the caller to
        re-read. The execution row is locked before the step's row (FOR NO KEY UPDATE:
        see ``_LOCKED_EXECUTION``).

        The first step to begin also marks a pending execution running (what
        :meth:`ExecutionRepository.mark_running` does), so a run's start costs no round
        trip of its own; an execution with a step under way is never shown pending.
        """
        rows = await self._db.rows(
            _BEGIN_SQL,
            {
                "execution_id": execution_id,
                **_begin_parameters(step_id, step_type, provider, month, price_keys),
            },
        )
        if not rows:
            _gone(execution_id)
            return None, False
        row = dict(zip(_BEGIN_COLUMNS, rows[0], strict=True))
        return _context(row), bool(row["started"])

    async def complete_and_begin(
        self,
        execution_id: str,
        step_id: str,
        *,
        outputs: dict[str, Any],
        usage: StepUsage,
        checkpoint_id: str,
        calls: Sequence[CallRow] = (),
        month: date | None = None,
        next_step: NextStep,
        completed: Mapping[str, dict[str, Any]],
        inputs: dict[str, Any],
    ) -> tuple[bool, StepContext | None]:
        """:meth:`complete_step` and, once the step has committed, :meth:`begin_step` of
        ``next_step`` (the step the state machine runs next when this one succeeds): one
        statement, so a chain of steps costs one round trip per step instead of two.

        Returns ``(committed, context)``: the context is the next step's, as
        :meth:`begin_step` would have read it after this commit, except for its
        ``inputs``, the execution's (they never change: the caller passes its own), and its
        ``outputs``: those are ``completed`` (the outputs of the steps completed before
        this one, as the caller's own context had them) with this step's added, not read
        back (every completed step's outputs again, at every step of a chain). A step
        completed meanwhile by another branch is not among them; what the next step's
        templates may see (its ancestors) completed before it could begin (the step
        runner checks). The context is None when the next step was not begun (this one did
        not commit, or the execution is paused, cancelled or ended, or the next step has
        completed): the caller then begins it on its own when it comes to it. The execution
        row is locked before the step's row, the order cancel and the run's end lock them
        in.
        """
        parameters = _completion(execution_id, step_id, outputs, usage, checkpoint_id, calls, month)
        parameters.update(
            _begin_parameters(
                next_step.step_id,
                next_step.step_type,
                next_step.provider,
                next_step.month,
                next_step.price_keys,
                month_name="next_month",
            )
        )
        rows = await self._db.rows(_complete_and_begin_sql(calls=bool(calls)), parameters)
        if not rows:
            _gone(execution_id)
            return False, None
        row = dict(zip(_COMPLETE_AND_BEGIN_COLUMNS, rows[0], strict=True))
        committed = bool(row["committed"])
        if not (committed and row["started"]):
            return committed, None
        return committed, _context(row, {**completed, step_id: outputs}, inputs)

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
                "WITH live AS (SELECT id FROM executions WHERE id = %(execution)s"
                " AND status = ANY(%(active)s)"
                " AND NOT cancel_requested FOR SHARE)"
                " INSERT INTO step_runs (execution_id, step_id, step_type, provider, status,"
                " attempts)"
                " SELECT id, %(step)s, %(type)s, %(provider)s, %(running_step)s, 1 FROM live"
                " ON CONFLICT (execution_id, step_id) DO UPDATE SET status = %(running_step)s,"
                " attempts = step_runs.attempts + 1, error = NULL, started_at = now()"
                " WHERE step_runs.status <> %(completed_step)s RETURNING attempts",
                {
                    "execution": execution_id,
                    "active": _ACTIVE,
                    "step": step_id,
                    "type": step_type,
                    "provider": provider,
                    "running_step": StepStatus.RUNNING.value,
                    "completed_step": StepStatus.COMPLETED.value,
                },
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
        calls: Sequence[CallRow] = (),
        month: date | None = None,
    ) -> bool:
        """Outputs, status, usage, the automatic checkpoint and the provider ``calls`` the
        attempt made (ledger, the step run's list, the owner's spend in ``month``): one
        statement, so one round trip and one commit.

        False (and no outputs or checkpoint written) if the attempt is no longer running:
        another delivery completed it first, or the execution ended or was restored
        meanwhile. The calls are recorded either way: money spent stays spent.
        """
        parameters = _completion(execution_id, step_id, outputs, usage, checkpoint_id, calls, month)
        rows = await self._db.rows(_complete_sql(calls=bool(calls)), parameters)
        if not rows:
            _gone(execution_id)
            return False
        return bool(rows[0][0])

    async def complete_and_end(
        self,
        execution_id: str,
        step_id: str,
        *,
        outputs: dict[str, Any],
        usage: StepUsage,
        checkpoint_id: str,
        calls: Sequence[CallRow] = (),
        month: date | None = None,
        end: RunEnd,
    ) -> tuple[bool, RunEnded | None]:
        """:meth:`complete_step` of the step whose success ends the run, and the
        execution's end with it (``end``): one statement, so the run's end costs no round
        trip nor transaction of its own. Written as ``ExecutionRepository.finish_recorded``
        writes a ``completed`` end, its ``finish`` event committed with it, and only if the
        step commits and the execution is still active with no failure recorded (a cancel
        that locked the row first has ended it and closed the step; a failure recorded by
        a failure handler makes the ending ``failed``, which ``finish`` writes).

        Returns ``(committed, ended)``: ``ended`` is None when the end was not written
        (then the caller's ``finish`` writes or refuses it, as before).
        """
        parameters = _completion(execution_id, step_id, outputs, usage, checkpoint_id, calls, month)
        parameters["end_now"] = end.now
        audit = None
        if end.event is not None:
            audit, audit_parameters = end.event
            parameters.update(audit_parameters)
        sql = _complete_and_end_sql(calls=bool(calls), audit=audit, live=end.live_triggers)
        rows = await self._db.rows(sql, parameters)
        if not rows:
            _gone(execution_id)
            return False, None
        first = rows[0]
        # committed, ``last``'s ends, the execution's columns (NULL unless ended), then
        # with ``live_triggers`` whether the row has a trigger and the trigger's columns.
        if not first[1]:
            return bool(first[0]), None
        columns = _ended_names()
        split = 2 + len(columns)
        ended = dict(zip(columns, first[2:split], strict=True))
        if not end.live_triggers:
            return True, RunEnded(ended, None)
        triggers = [TriggerRecord(*row[split + 1 :]) for row in rows if row[split]]
        return True, RunEnded(ended, triggers)

    async def record_step_error(
        self,
        execution_id: str,
        step_id: str,
        error: dict[str, Any],
        *,
        final: bool,
        calls: Sequence[CallRow] = (),
        month: date | None = None,
    ) -> None:
        """Keep the step's latest error; ``final`` marks it failed (no retry will follow).
        The provider ``calls`` the attempt made are recorded in the same statement (see
        :meth:`complete_step`)."""
        async with self._db.connection() as conn:
            if not calls:
                await step_error(conn, execution_id, step_id, error, final=final)
                return
            # SET reads the row as it was: a completed step keeps its status and error and
            # only gets the calls appended.
            await conn.execute(
                "WITH " + LEDGER_CTES + " UPDATE step_runs SET"
                " calls = coalesce(calls, '[]'::jsonb) || %(calls)s::jsonb,"
                " error = CASE WHEN status <> %(completed_step)s THEN %(error)s ELSE error END,"
                " status = CASE WHEN %(final)s AND status <> %(completed_step)s"
                "   THEN %(failed_step)s ELSE status END,"
                " completed_at = CASE WHEN %(final)s AND status <> %(completed_step)s"
                "   THEN clock_timestamp() ELSE completed_at END"
                " WHERE execution_id = %(execution_id)s AND step_id = %(step_id)s",
                {
                    **ledger_parameters(execution_id, step_id, calls, _month(month)),
                    "error": Jsonb(error),
                    "final": final,
                    "completed_step": StepStatus.COMPLETED.value,
                    "failed_step": StepStatus.FAILED.value,
                },
            )

    async def step_runs(self, execution_id: str) -> list[StepRunRecord]:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT * FROM step_runs WHERE execution_id = %s ORDER BY started_at, step_id",
                (execution_id,),
            )
            rows = await cur.fetchall()
        return [step_run_record(row) for row in rows]

    async def record_failure(
        self, execution_id: str, step_id: str | None, error: dict[str, Any]
    ) -> None:
        """A step's failure handler ran: the step (if named) has failed for good, and the
        execution keeps ``error`` (its first recorded failure) for :meth:`finish` to end
        it with. Nothing is written for an execution that has ended."""
        async with self._db.transaction() as conn:
            if step_id is not None:
                await step_error(conn, execution_id, step_id, error, final=True)
            # A Parallel's failure handler knows the error but not the step (its Catch sees
            # the branch fail): name the step that recorded an error of that type, the one
            # begun last if several did.
            await conn.execute(
                "UPDATE executions SET error = COALESCE(error, %s::jsonb || COALESCE("
                " (SELECT jsonb_build_object('step_id', r.step_id) FROM step_runs r"
                "  WHERE %s AND r.execution_id = %s AND r.status <> %s"
                "  AND r.error->>'type' = %s ORDER BY r.started_at DESC LIMIT 1),"
                " '{}'::jsonb)), updated_at = now()"
                " WHERE id = %s AND status = ANY(%s)",
                (
                    Jsonb(error),
                    step_id is None,
                    execution_id,
                    StepStatus.COMPLETED.value,
                    error.get("type"),
                    execution_id,
                    _ACTIVE,
                ),
            )

    # -- parking -------------------------------------------------------------------------

    async def park(self, execution_id: str, step_id: str | None, task_token: str) -> str:
        """Store the token of a step parked by a pause.

        Returns "parked", or "released" when the pause was lifted before the step got here
        (the caller answers the token itself), or "cancel_requested". The status is the pause's
        business: the flag is set only together with ``paused``.
        """
        async with self._db.transaction() as conn:
            cur = await conn.execute(
                "SELECT pause_requested, cancel_requested FROM executions WHERE id = %s FOR UPDATE",
                (execution_id,),
            )
            row = await cur.fetchone()
            if row is None or row["cancel_requested"]:
                return "cancel_requested"
            if not row["pause_requested"]:
                return "released"
            await conn.execute(
                "INSERT INTO parked_tasks (execution_id, step_id, task_token) VALUES (%s, %s, %s)"
                " ON CONFLICT (execution_id, step_id) DO UPDATE SET task_token ="
                " EXCLUDED.task_token, parked_at = now()",
                (execution_id, step_id or "", task_token),
            )
        return "parked"


async def step_error(
    conn: Connection, execution_id: str, step_id: str, error: dict[str, Any], *, final: bool
) -> None:
    await conn.execute(
        "UPDATE step_runs SET error = %s,"
        " status = CASE WHEN %s THEN %s ELSE status END,"
        " completed_at = CASE WHEN %s THEN clock_timestamp() ELSE completed_at END"
        " WHERE execution_id = %s AND step_id = %s AND status <> %s",
        (
            Jsonb(error),
            final,
            StepStatus.FAILED.value,
            final,
            execution_id,
            step_id,
            StepStatus.COMPLETED.value,
        ),
    )


async def take_parked(conn: Connection, execution_id: str) -> list[str]:
    cur = await conn.execute(
        "DELETE FROM parked_tasks WHERE execution_id = %s RETURNING task_token", (execution_id,)
    )
    return [row["task_token"] for row in await cur.fetchall()]


async def close_running_steps(
    conn: Connection, execution_id: str, error: dict[str, Any] | None, now: datetime
) -> None:
    await conn.execute(
        "UPDATE step_runs SET status = %s, error = COALESCE(error, %s), completed_at = %s"
        " WHERE execution_id = %s AND status = %s",
        (
            StepStatus.FAILED.value,
            Jsonb(error) if error is not None else None,
            now,
            execution_id,
            StepStatus.RUNNING.value,
        ),
    )


def _completion(
    execution_id: str,
    step_id: str,
    outputs: dict[str, Any],
    usage: StepUsage,
    checkpoint_id: str,
    calls: Sequence[CallRow],
    month: date | None,
) -> dict[str, Any]:
    """The parameters of :func:`_completion_sql`."""
    parameters: dict[str, Any] = {
        "outputs": Jsonb(outputs),
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "latency_ms": usage.latency_ms,
        "execution_id": execution_id,
        "step_id": step_id,
        "checkpoint_id": checkpoint_id,
        "rid": RUN_FENCE.get(),
    }
    if calls:
        parameters.update(ledger_parameters(execution_id, step_id, calls, _month(month)))
    return parameters


@functools.cache
def _completion_sql(*, calls: bool, end: bool = False) -> str:
    """The CTEs that complete a step (``done``; with ``calls``, the ledger's too) and write
    its checkpoint (``ckpt``, a row once the step has completed; ``last``, the execution's
    latest checkpoint). The statement has the execution row locked as ``e``, and the step's
    row is locked after it (joined to ``e``), not before."""
    # Only the attempt still running completes: a step that cancel, a timeout or the fail
    # handler has closed as failed meanwhile stays failed, and one that a restore has
    # dropped stays dropped (no row).
    checkpoint = _CHECKPOINT.format(guard=" WHERE completed" if calls else "") + (
        _LAST_ENDING.format(columns=_ended_columns()) if end else _LAST
    )
    # A step whose commit ends the run completed when its work did, as the execution did
    # (``end_now``, the end's ``completed_at`` and its ``finish`` event's time): the
    # statement's own clock, read later, would put the step's end after the execution's.
    completed_at = "%(end_now)s" if end else "clock_timestamp()"
    if not calls:
        return _compact(
            "done AS (UPDATE step_runs SET status = %(completed_step)s,"
            " outputs = %(outputs)s, error = NULL, input_tokens = %(input_tokens)s,"
            " output_tokens = %(output_tokens)s, latency_ms = %(latency_ms)s,"
            f" completed_at = {completed_at}"
            + " FROM e WHERE step_runs.execution_id = e.id AND"
            + " step_runs.execution_id = %(execution_id)s AND step_id = %(step_id)s"
            " AND step_runs.status = %(running_step)s RETURNING 1), " + checkpoint
        )
    # One UPDATE of the row (a statement may update a row once): the calls are appended
    # whatever its status; the rest only if the attempt is still running, as the row locked
    # by ``prior`` says (SET's own reads see the same version).
    running = "p.live"
    # The execution's row is read already, as ``e``.
    ledger = ledger_ctes(owner="SELECT owner_id FROM e")
    return _compact(
        ledger + ","
        " prior AS (SELECT r.status = %(running_step)s AS live FROM step_runs r"
        + " JOIN e ON e.id = r.execution_id"
        + " WHERE r.execution_id = %(execution_id)s"
        "   AND r.step_id = %(step_id)s FOR UPDATE OF r),"
        " done AS (UPDATE step_runs r SET"
        "   calls = coalesce(r.calls, '[]'::jsonb) || %(calls)s::jsonb,"
        f"  status = CASE WHEN {running} THEN %(completed_step)s ELSE r.status END,"
        f"  outputs = CASE WHEN {running} THEN %(outputs)s ELSE r.outputs END,"
        f"  error = CASE WHEN {running} THEN NULL ELSE r.error END,"
        f"  input_tokens = CASE WHEN {running} THEN %(input_tokens)s::int"
        "     ELSE r.input_tokens END,"
        f"  output_tokens = CASE WHEN {running} THEN %(output_tokens)s::int"
        "     ELSE r.output_tokens END,"
        f"  latency_ms = CASE WHEN {running} THEN %(latency_ms)s ELSE r.latency_ms END,"
        f"  completed_at = CASE WHEN {running} THEN {completed_at}"
        "     ELSE r.completed_at END"
        "   FROM prior p WHERE r.execution_id = %(execution_id)s"
        "   AND r.step_id = %(step_id)s"
        f"  RETURNING {running} AS completed), " + checkpoint
    )


@functools.cache
def _complete_sql(*, calls: bool) -> str:
    # The execution's row is locked first (as a begin does) so that the fence reads the
    # owner a takeover may be writing: the takeover's update waits, or this sees its result.
    return _compact(
        "WITH "
        + _LOCKED_EXECUTION
        + ", "
        + _completion_sql(calls=calls)
        + " SELECT EXISTS (SELECT 1 FROM ckpt) AS committed FROM e"
    )


@functools.cache
def _ended_names() -> tuple[str, ...]:
    """The columns of an ``ExecutionSummary``, in the order the ending ``last`` returns
    them."""
    # Imported here: ``store.executions`` builds on this module.
    from llm_orchestrator.store.executions import ExecutionSummary

    return tuple(ExecutionSummary.__dataclass_fields__)


def _ended_columns() -> str:
    return ", ".join(f"x.{name}" for name in _ended_names())


_TRIGGER_COLUMNS = ", ".join(f"t.{name}" for name in TriggerRecord.__dataclass_fields__)
"""A live trigger's columns, in ``TriggerRecord``'s order (the rows are tuples)."""


@functools.cache
def _complete_and_end_sql(*, calls: bool, audit: str | None, live: bool) -> str:
    """:func:`_complete_sql` whose ``last`` also writes the execution's end (``e.ends``:
    still active, no failure recorded), with the ``finish`` event's outbox insert
    (``audit``) and, with ``live``, the live event triggers, both only when it did."""
    locked = _LOCKED_EXECUTION.replace(
        " FROM executions", ", status = ANY(%(active)s) AND error IS NULL AS ends FROM executions"
    )
    assert locked != _LOCKED_EXECUTION, "the locked execution's select list moved"
    sql = "WITH " + locked + ", " + _completion_sql(calls=calls, end=True)
    if audit is not None:
        sql += ", audit AS (" + audit + " FROM last WHERE last.ends)"
    sql += " SELECT EXISTS (SELECT 1 FROM ckpt) AS committed, l.*"
    if live:
        sql += ", t.id IS NOT NULL, " + _TRIGGER_COLUMNS
    sql += " FROM e LEFT JOIN last l ON l.ends"
    if live:
        sql += f" LEFT JOIN LATERAL ({LIVE_EVENT_TRIGGERS}) t ON l.ends"
        sql += " ORDER BY t.created_at, t.id"
    return _compact(sql)


def _gone(execution_id: str) -> None:
    """No row: the execution is gone, or (in a fenced run) another runner's now. Either way
    a fenced run stops without writing anything more."""
    if RUN_FENCE.get() is not None:
        raise FencedOff(execution_id)


@functools.cache
def _complete_and_begin_sql(*, calls: bool) -> str:
    return _compact(
        "WITH "
        + _LOCKED_EXECUTION
        + ", "
        + _completion_sql(calls=calls)
        + ", "
        + _BEGIN.format(guard=" AND EXISTS (SELECT 1 FROM ckpt)")
        + " SELECT EXISTS (SELECT 1 FROM ckpt) AS committed, "
        + _CONTEXT.format(month="next_month")
        # No step status (the step is begun) and no outputs: they are the caller's, who has
        # those of the steps before and this one's.
        + _CONTEXT_FROM.format(month="next_month")
    )


def _compact(sql: str) -> str:
    """One space between words, and the statuses written in as literals: psycopg parses a
    statement once and caches it only up to 4,096 characters (``MAX_CACHED_STATEMENT_LENGTH``),
    and a step's completion with its next step's begin is near that once indented; beyond
    it every execution re-parses it. The statuses are the code's own constants, so a
    literal is as safe as a parameter, and one parameter fewer to adapt and send each time."""
    for placeholder, literal in _STATUS_LITERALS.items():
        sql = sql.replace(placeholder, literal)
    return " ".join(sql.split())


def _literal(status: str) -> str:
    if not status.isidentifier():  # nothing that would need quoting
        raise ValueError(f"status {status!r} cannot be written as a plain literal")
    return f"'{status}'"


_STATUS_LITERALS = {
    "%(running_step)s": _literal(StepStatus.RUNNING.value),
    "%(completed_step)s": _literal(StepStatus.COMPLETED.value),
    "%(pending_execution)s": _literal(ExecutionStatus.PENDING.value),
    "%(running_execution)s": _literal(ExecutionStatus.RUNNING.value),
    "%(completed_execution)s": _literal(ExecutionStatus.COMPLETED.value),
    "= ANY(%(active)s)": "IN (" + ", ".join(_literal(status) for status in _ACTIVE) + ")",
}


_BEGIN_SQL = _compact(
    "WITH "
    + _LOCKED_EXECUTION
    + ", "
    + _BEGIN.format(guard="")
    + ","
    + _RUNNING
    + " SELECT "
    + _CONTEXT.format(month="month")
    + ", e.inputs,"
    " (SELECT status FROM step_runs WHERE execution_id = e.id AND step_id = %(step)s)"
    "   AS step_status,"
    " COALESCE((SELECT jsonb_object_agg(step_id, outputs) FROM step_runs"
    "   WHERE execution_id = e.id AND status = %(completed_step)s), '{}'::jsonb)"
    "   AS outputs" + _CONTEXT_FROM.format(month="month")
)


# The columns of ``_CONTEXT``, then of what each statement adds, in order: the step
# statements go by ``Database.rows`` (tuples, for a fraction of a cursor's CPU).
_CONTEXT_COLUMNS = (
    "status",
    "pause_requested",
    "cancel_requested",
    "started",
    "budget_user",
    "budget_explicit",
    "budget_monthly",
    "prices",
)
_BEGIN_COLUMNS = (*_CONTEXT_COLUMNS, "inputs", "step_status", "outputs")
_COMPLETE_AND_BEGIN_COLUMNS = ("committed", *_CONTEXT_COLUMNS)


def _month(month: date | None) -> date:
    if month is None:
        raise ValueError("recording provider calls needs the month their cost counts in")
    return month
