"""Read-only aggregates over workflows, executions and step runs, for ``/metrics`` and stats.

Counted in the database rather than in process memory: on AWS every Lambda container would
otherwise report only what it happened to see.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from llm_orchestrator.executions.status import ExecutionStatus
from llm_orchestrator.store.db import Connection, Database

NO_PROVIDER = "none"
"""The ``provider`` label of steps that call none (a Prometheus label cannot be NULL)."""


@dataclass(frozen=True)
class StepDurations:
    """A cumulative histogram of finished step runs of one step type and provider."""

    step_type: str
    provider: str
    cumulative_counts: tuple[int, ...]
    """Runs at or under each bucket bound, in the order of the bounds asked for."""
    count: int
    sum_seconds: float


@dataclass(frozen=True)
class MetricsSnapshot:
    workflows_total: int
    executions_by_status: dict[str, int]
    step_durations: list[StepDurations]
    tokens: dict[tuple[str, str], int]
    """``(provider, direction)`` → tokens, direction ``input`` or ``output``."""


@dataclass(frozen=True)
class SystemCounts:
    total_workflows: int
    executions_by_status: dict[str, int]
    active_users: int
    avg_execution_time_ms: float | None


class MetricsRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def snapshot(self, bucket_bounds_seconds: Sequence[float]) -> MetricsSnapshot:
        """Every ``/metrics`` aggregate, read from one consistent view of the database."""
        async with self._db.transaction() as conn:
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            workflows = await _count_workflows(conn)
            by_status = await _status_transitions(conn)
            durations = await _step_durations(conn, bucket_bounds_seconds)
            tokens = await _tokens(conn)
        return MetricsSnapshot(workflows, by_status, durations, tokens)

    async def system_counts(self, *, active_since: datetime) -> SystemCounts:
        """Totals for ``/admin/stats``. A user is active when they logged in or used one of
        their API keys at or after ``active_since``."""
        async with self._db.transaction() as conn:
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            workflows = await _count_workflows(conn)
            by_status = await _executions_by_status(conn)
            cur = await conn.execute(
                "SELECT count(*) AS n FROM users u WHERE u.last_login >= %s OR EXISTS"
                " (SELECT 1 FROM api_keys k WHERE k.user_id = u.id AND k.last_used_at >= %s)",
                (active_since, active_since),
            )
            active = await cur.fetchone()
            cur = await conn.execute(
                "SELECT avg(extract(epoch FROM completed_at - started_at)) * 1000 AS ms"
                " FROM executions WHERE status = %s AND completed_at IS NOT NULL",
                (ExecutionStatus.COMPLETED.value,),
            )
            average = await cur.fetchone()
        avg_ms = average["ms"] if average else None
        return SystemCounts(
            total_workflows=workflows,
            executions_by_status=by_status,
            active_users=int(active["n"]) if active else 0,
            avg_execution_time_ms=float(avg_ms) if avg_ms is not None else None,
        )


async def _count_workflows(conn: Connection) -> int:
    cur = await conn.execute("SELECT count(*) AS n FROM workflows")
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def _executions_by_status(conn: Connection) -> dict[str, int]:
    cur = await conn.execute(
        "SELECT status, count(*) AS n FROM executions GROUP BY status ORDER BY status"
    )
    return {row["status"]: int(row["n"]) for row in await cur.fetchall()}


async def _status_transitions(conn: Connection) -> dict[str, int]:
    """How many times executions entered each status: a counter that never goes down."""
    cur = await conn.execute(
        "SELECT status, count(*) AS n FROM execution_status_ledger GROUP BY status ORDER BY status"
    )
    return {row["status"]: int(row["n"]) for row in await cur.fetchall()}


async def _step_durations(conn: Connection, bounds: Sequence[float]) -> list[StepDurations]:
    # Every step run that completed, kept in the ledger even when a restore or a deleted
    # workflow later removes the live row.
    cur = await conn.execute(
        "SELECT s.step_type, coalesce(s.provider, %s) AS provider, b.i,"
        " count(*) FILTER (WHERE s.latency_ms <= b.le * 1000) AS at_most,"
        " count(*) AS n, sum(s.latency_ms) / 1000.0 AS sum_seconds"
        " FROM step_run_ledger s CROSS JOIN unnest(%s::float8[]) WITH ORDINALITY AS b(le, i)"
        " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        (NO_PROVIDER, list(bounds)),
    )
    series: dict[tuple[str, str], tuple[list[int], int, float]] = {}
    for row in await cur.fetchall():
        key = (row["step_type"], row["provider"])
        counts, _, _ = series.setdefault(key, ([], int(row["n"]), float(row["sum_seconds"])))
        counts.append(int(row["at_most"]))
    return [
        StepDurations(step_type, provider, tuple(counts), count, sum_seconds)
        for (step_type, provider), (counts, count, sum_seconds) in series.items()
    ]


async def _tokens(conn: Connection) -> dict[tuple[str, str], int]:
    cur = await conn.execute(
        "SELECT provider, coalesce(sum(input_tokens), 0) AS input,"
        " coalesce(sum(output_tokens), 0) AS output"
        " FROM step_run_ledger WHERE provider IS NOT NULL AND step_type IN ('llm', 'embed')"
        # Vector steps record their database as the provider: no tokens, no series.
        " GROUP BY provider ORDER BY provider"
    )
    tokens: dict[tuple[str, str], int] = {}
    for row in await cur.fetchall():
        tokens[(row["provider"], "input")] = int(row["input"])
        tokens[(row["provider"], "output")] = int(row["output"])
    return tokens
