"""Fixed-window request counters shared by every process and Lambda container."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llm_orchestrator.store.db import Database


@dataclass(frozen=True)
class RateCharge:
    """One request to count, for a subject whose tier a query learns on the way: the
    windows it counts in, and every tier's limit for each (``default_tier`` for a tier
    not listed)."""

    at: datetime
    names: list[str]
    starts: list[datetime]
    limits: dict[str, list[int]]
    default_tier: str

    def params(self) -> dict[str, Any]:
        # Here, not at the top: the HTTP handlers import this module for ``RateCharge``
        # and load the database driver on their first query, not at import.
        from psycopg.types.json import Jsonb

        return {
            "rl_names": self.names,
            "rl_starts": self.starts,
            "rl_limits": Jsonb(self.limits),
            "rl_default": self.default_tier,
        }


def rate_hit_sql(subject_sql: str, tier_sql: str) -> str:
    """``rate_limit_hit`` (migration 0060) as an expression of a query that knows the
    subject and tier as SQL, with :meth:`RateCharge.params` bound: the count rides on that
    query's round trip. Yields each window's hits including this request."""
    limits = f"COALESCE(%(rl_limits)s::jsonb -> {tier_sql}, %(rl_limits)s::jsonb -> %(rl_default)s)"
    return (
        f"rate_limit_hit({subject_sql}, %(rl_names)s::text[], %(rl_starts)s::timestamptz[],"
        f" (SELECT array_agg(l::integer ORDER BY i)"
        f" FROM jsonb_array_elements_text({limits}) WITH ORDINALITY AS w(l, i)))"
    )


@dataclass(frozen=True)
class WindowCount:
    window_name: str
    window_start: datetime
    hits: int


class RateLimitRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def hit(
        self,
        subject: str,
        windows: Sequence[tuple[str, datetime, int]],
        *,
        timeout: float | None = None,
    ) -> tuple[bool, list[WindowCount]]:
        """Count one request in every window unless that would exceed a limit.

        ``windows`` is ``(name, window_start, limit)``. Returns whether the request is
        allowed and the counts it saw; a refused request is rolled back and consumes nothing.
        ``timeout`` bounds the whole count (see ``Database.connection``).
        """
        names = [name for name, _, _ in windows]
        starts = [start for _, start, _ in windows]
        limits = [limit for _, _, limit in windows]
        async with self._db.connection(timeout=timeout) as conn:
            cur = await conn.execute(
                "SELECT rate_limit_hit(%s, %s::text[], %s::timestamptz[], %s::integer[]) AS hits",
                (subject, names, starts, limits),
            )
            row = await cur.fetchone()
        assert row is not None
        return evaluate(windows, row["hits"])

    async def purge_before(self, cutoff: datetime, *, timeout: float | None = None) -> None:
        async with self._db.connection(timeout=timeout) as conn:
            await conn.execute("DELETE FROM rate_limit_counters WHERE window_start < %s", (cutoff,))


def evaluate(
    windows: Sequence[tuple[str, datetime, int]], hits: Sequence[int]
) -> tuple[bool, list[WindowCount]]:
    """What ``rate_limit_hit`` answered: allowed, and the counts as they now stand (a
    refused request was counted back)."""
    allowed = all(n <= limit for n, (_, _, limit) in zip(hits, windows, strict=True))
    return allowed, [
        WindowCount(name, start, n if allowed else n - 1)
        for n, (name, start, _) in zip(hits, windows, strict=True)
    ]
