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
        """The parameters of :func:`rate_hit_sql`: only the windows' starts vary between
        requests, and whole seconds are the cheapest values to send."""
        return {f"rl_start_{i}": round(start.timestamp()) for i, start in enumerate(self.starts)}


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _int_array(values: Sequence[int]) -> str:
    return "ARRAY[" + ", ".join(str(int(v)) for v in values) + "]::integer[]"


_STATEMENTS: dict[tuple[str, str, int], tuple[RateCharge, str]] = {}
"""``rate_hit_sql``'s answers by subject, tier and the limits table they were written for
(a server has one table for its lifetime); each entry keeps the charge whose table it
names, so an identity is never mistaken for a later table's."""


def rate_hit_sql(subject_sql: str, tier_sql: str, charge: RateCharge) -> str:
    """:func:`rate_hit_sql_text`, written once per subject, tier and limits table: every
    authenticated request asks for the same text."""
    key = (subject_sql, tier_sql, id(charge.limits))
    known = _STATEMENTS.get(key)
    if known is not None and known[0].limits is charge.limits and known[0].names == charge.names:
        return known[1]
    text = rate_hit_sql_text(subject_sql, tier_sql, charge)
    if len(_STATEMENTS) >= 64:  # many servers in one process (tests): forget the old ones
        _STATEMENTS.clear()
    _STATEMENTS[key] = (charge, text)
    return text


def rate_hit_sql_text(subject_sql: str, tier_sql: str, charge: RateCharge) -> str:
    """``rate_limit_hit`` (migration 0060) as an expression of a query that knows the
    subject and tier as SQL, with :meth:`RateCharge.params` bound: the count rides on that
    query's round trip. Yields each window's hits including this request.

    The window names and every tier's limits are written into the statement (they are the
    server's configuration, the same on every request), so the statement text stays the
    same, psycopg prepares it once per connection, and neither side encodes or parses them
    per request; only the windows' starts travel as parameters.
    """
    names = "ARRAY[" + ", ".join(_literal(name) for name in charge.names) + "]::text[]"
    starts = (
        "ARRAY["
        + ", ".join(f"to_timestamp(%(rl_start_{i})s::bigint)" for i in range(len(charge.starts)))
        + "]"
    )
    default = charge.limits[charge.default_tier]
    tiers = " ".join(
        f"WHEN {_literal(tier)} THEN {_int_array(limits)}" for tier, limits in charge.limits.items()
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
