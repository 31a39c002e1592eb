"""``/admin/stats``: system totals, computed from the database on every call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from llm_orchestrator.executions.status import ExecutionStatus
from llm_orchestrator.store.metrics import MetricsRepository

ACTIVE_USER_WINDOW = timedelta(days=30)
"""A user is active who logged in, or whose API key was used, within this window."""
ALWAYS_REPORTED_STATUSES = (
    ExecutionStatus.PENDING,
    ExecutionStatus.RUNNING,
    ExecutionStatus.COMPLETED,
    ExecutionStatus.FAILED,
)
"""Listed even at zero (the spec's shape); other statuses appear once an execution has one."""


class ActiveKeyCounter(Protocol):
    async def count_active(self, now: datetime) -> int: ...


class SpendLedger(Protocol):
    async def spend_since(self, *starts: datetime) -> list[float]: ...


@dataclass(frozen=True)
class SystemStats:
    total_workflows: int
    total_executions: int
    executions_by_status: dict[str, int]
    active_users: int
    api_keys_count: int
    avg_execution_time_ms: float
    """Mean wall time of completed executions; 0 until one completes."""
    uptime_seconds: int
    spend_today_usd: float = 0.0
    """USD of provider calls since 00:00 UTC today (calls with a known price)."""
    spend_month_usd: float = 0.0
    """USD of provider calls since the first of this month, 00:00 UTC."""


async def system_stats(
    metrics: MetricsRepository,
    api_keys: ActiveKeyCounter,
    *,
    now: datetime,
    started_at: float,
    spend: SpendLedger | None = None,
) -> SystemStats:
    """``started_at`` is this process's start (epoch seconds): uptime is per instance."""
    counts = await metrics.system_counts(active_since=now - ACTIVE_USER_WINDOW)
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    spent_today, spent_month = (
        await spend.spend_since(today, today.replace(day=1)) if spend else (0.0, 0.0)
    )
    by_status = dict.fromkeys((status.value for status in ALWAYS_REPORTED_STATUSES), 0)
    by_status.update(counts.executions_by_status)
    return SystemStats(
        total_workflows=counts.total_workflows,
        total_executions=sum(counts.executions_by_status.values()),
        executions_by_status=by_status,
        active_users=counts.active_users,
        api_keys_count=await api_keys.count_active(now),
        avg_execution_time_ms=round(counts.avg_execution_time_ms or 0.0, 2),
        uptime_seconds=max(0, int(now.timestamp() - started_at)),
        spend_today_usd=round(spent_today, 6),
        spend_month_usd=round(spent_month, 6),
    )


class SystemStatsService:
    """``system_stats`` with its collaborators bound, as ``/admin/stats`` asks for it."""

    def __init__(
        self,
        metrics: MetricsRepository,
        api_keys: ActiveKeyCounter,
        *,
        clock: Callable[[], datetime],
        started_at: Callable[[], float],
        spend: SpendLedger | None = None,
    ) -> None:
        """``started_at``: when this process started (epoch seconds), read on every call."""
        self._metrics = metrics
        self._api_keys = api_keys
        self._now = clock
        self._started_at = started_at
        self._spend = spend

    async def current(self) -> SystemStats:
        return await system_stats(
            self._metrics,
            self._api_keys,
            now=self._now(),
            started_at=self._started_at(),
            spend=self._spend,
        )
