"""Fixed-window request counters shared by every process and Lambda container."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llm_orchestrator.store.db import Database


class RateTable:
    """A server's rate-limit configuration as SQL: the windows' names and every tier's
    limit for each (``default_tier`` for a tier not listed). Built once per limiter, it
    writes :func:`rate_hit_sql_text` once per query shape that asks (a subject and tier
    expression), so every authenticated request sends the same statement text."""

    def __init__(
        self, names: Sequence[str], limits: Mapping[str, Sequence[int]], default_tier: str
    ) -> None:
        self.names = tuple(names)
        self.limits = {tier: tuple(values) for tier, values in limits.items()}
        self.default_tier = default_tier
        self._statements: dict[tuple[str, str], str] = {}

    def hit_sql(self, subject_sql: str, tier_sql: str) -> str:
        """:func:`rate_hit_sql_text` for this table (the repositories ask with a handful of
        fixed expressions, so this never grows past them)."""
        key = (subject_sql, tier_sql)
        text = self._statements.get(key)
        if text is None:
            text = self._statements[key] = rate_hit_sql_text(subject_sql, tier_sql, self)
        return text


@dataclass(frozen=True)
class RateCharge:
    """One request to count, for a subject whose tier a query learns on the way: when it
    was made, the start of each of ``table``'s windows it counts in (in whole seconds since
    the epoch), and the table."""

    at: datetime
    start_epochs: tuple[int, ...]
    table: RateTable

    @property
    def names(self) -> tuple[str, ...]:
        return self.table.names

    @property
    def starts(self) -> list[datetime]:
        return [datetime.fromtimestamp(start, tz=self.at.tzinfo) for start in self.start_epochs]

    def params(self) -> dict[str, Any]:
        """The parameters of :meth:`RateTable.hit_sql`'s statement: only the windows'
        starts vary between requests, and whole seconds are the cheapest values to send."""
        return {f"rl_start_{i}": start for i, start in enumerate(self.start_epochs)}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _int_array(values: Sequence[int]) -> str:
    return "ARRAY[" + ", ".join(str(int(v)) for v in values) + "]::integer[]"


def rate_hit_sql_text(subject_sql: str, tier_sql: str, table: RateTable) -> str:
    """``rate_limit_hit`` (migration 0060) as an expression of a query that knows the
    subject and tier as SQL, with :meth:`RateCharge.params` bound: the count rides on that
    query's round trip. Yields each window's hits including this request.

    The window names and every tier's limits are written into the statement (they are the
    server's configuration, the same on every request), so the statement text stays the
    same, psycopg prepares it once per connection, and neither side encodes or parses them
    per request; only the windows' starts travel as parameters.
    """
    names = "ARRAY[" + ", ".join(_literal(name) for name in table.names) + "]::text[]"
    starts = (
        "ARRAY["
        + ", ".join(f"to_timestamp(%(rl_start_{i})s::bigint)" for i in range(len(table.names)))
        + "]"
    )
    default = table.limits[table.default_tier]
    tiers = " ".join(
        f"WHEN {_literal(tier)} THEN {_int_array(limits)}" for tier, limits in table.limits.items()
    )
    limits_sql = f"CASE {tier_sql} {tiers} ELSE {_int_array(default)} END"
    return f"rate_limit_hit({subject_sql}, {names}, {starts}, {limits_sql})"


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
