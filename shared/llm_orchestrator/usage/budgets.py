"""Monthly USD budgets per user, held against the spend counted in PostgreSQL.

An execute request is refused (429, ``details.reason = "budget_exhausted"``) once the
owner's spend this month has reached their budget, and so is a trigger's firing (it starts
nothing; the reason is the trigger's ``last_error``); a running execution's next ``llm`` or
``embed`` step calls no provider and fails with ``BudgetExhausted`` (the step runner raises
it), so an execution that crosses the budget finishes the step in flight and stops there.
Spend is added atomically in the statement that records each call (``store/usage.py``), so
concurrent executions can overspend by at most the calls already in flight when the budget
was reached.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Protocol

from llm_orchestrator.errors import NotFound, OverBudget
from llm_orchestrator.store.usage import BudgetRow, BudgetSetting

if TYPE_CHECKING:
    from llm_orchestrator.store.db import Read

__all__ = ["BudgetStatus", "BudgetStore", "Budgets"]


class BudgetStore(Protocol):
    """``UsageRepository`` in production."""

    async def budget(self, user_id: str, *, month: date) -> BudgetRow | None: ...

    def budget_read(self, user_id: str, *, month: date) -> Read[BudgetRow | None]: ...

    async def budget_of_execution(self, execution_id: str, *, month: date) -> BudgetRow | None: ...

    async def set_budget(
        self, user_id: str, monthly_usd: float | None, *, updated_by: str
    ) -> bool: ...


@dataclass(frozen=True)
class BudgetStatus:
    monthly_usd: float | None
    """None: no budget."""
    spent_usd: float
    """Spend this month (UTC), calls with a known price."""
    resets_at: datetime
    """00:00 UTC on the first of next month, when the spend starts again from zero."""

    @property
    def exhausted(self) -> bool:
        return self.monthly_usd is not None and self.spent_usd >= self.monthly_usd


class Budgets:
    def __init__(
        self,
        store: BudgetStore,
        *,
        clock: Callable[[], datetime],
        default_monthly_usd: float | None = None,
    ) -> None:
        self._store = store
        self._now = clock
        self._default = default_monthly_usd

    async def status(self, user_id: str) -> BudgetStatus:
        now = self._now()
        row = await self._store.budget(user_id, month=month_of(now))
        if row is None:
            raise NotFound(f"User '{user_id}' not found")
        return self._status(row, now)

    async def set(self, user_id: str, monthly_usd: float | None, *, by: str) -> BudgetStatus:
        if not await self._store.set_budget(user_id, monthly_usd, updated_by=by):
            raise NotFound(f"User '{user_id}' not found")
        return await self.status(user_id)

    async def check_execute(self, user_id: str) -> None:
        """Raises ``OverBudget`` when ``user_id``'s budget is spent."""
        self.check_execute_row(await self._store.budget(user_id, month=month_of(self._now())))

    def execute_read(self, user_id: str) -> Read[BudgetRow | None]:
        """What :meth:`check_execute` reads, for a statement that runs anyway to carry;
        :meth:`check_execute_row` checks its answer."""
        return self._store.budget_read(user_id, month=month_of(self._now()))

    def check_execute_row(self, row: BudgetRow | None) -> None:
        """:meth:`check_execute` for the budget row, already read."""
        now = self._now()
        if row is None:
            return
        status = self._status(row, now)
        if status.exhausted and status.monthly_usd is not None:
            raise OverBudget(
                f"Monthly budget exhausted: ${status.spent_usd:.2f} spent of "
                f"${status.monthly_usd:.2f}; it resets at {_iso(status.resets_at)}",
                monthly_usd=status.monthly_usd,
                spent_usd=status.spent_usd,
                resets_at=_iso(status.resets_at),
                retry_after=max(1, math.ceil((status.resets_at - now).total_seconds())),
            )

    async def step_refusal(self, execution_id: str) -> str | None:
        """Why the execution's next provider call may not happen (its owner's budget is
        spent), or None. The step runner turns a reason into ``BudgetExhausted``."""
        now = self._now()
        row = await self._store.budget_of_execution(execution_id, month=month_of(now))
        return self.refusal(row)

    def month(self) -> date:
        """The month whose budget and spend count now (its first day, UTC)."""
        return month_of(self._now())

    def applies(self, row: BudgetSetting | None) -> bool:
        """Whether the owner of ``row`` has a budget at all (their own or the default)."""
        return row is not None and (row.monthly_usd if row.explicit else self._default) is not None

    def refusal(self, row: BudgetRow | None) -> str | None:
        """:meth:`step_refusal` for the owner's budget row, already read with its spend."""
        if row is None:
            return None
        now = self._now()
        status = self._status(row, now)
        if not status.exhausted:
            return None
        return (
            f"the monthly budget of ${status.monthly_usd:.2f} is spent "
            f"(${status.spent_usd:.2f}); no further provider calls until it resets at "
            f"{_iso(status.resets_at)} or an admin raises it"
        )

    def _status(self, row: BudgetRow, now: datetime) -> BudgetStatus:
        limit = row.monthly_usd if row.explicit else self._default
        return BudgetStatus(limit, round(row.spent_usd, 10), next_month(now))


def month_of(now: datetime) -> date:
    return now.astimezone(UTC).date().replace(day=1)


def next_month(now: datetime) -> datetime:
    first = month_of(now)
    year, month = (first.year + 1, 1) if first.month == 12 else (first.year, first.month + 1)
    return datetime(year, month, 1, tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
