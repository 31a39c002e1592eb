"""Fixed-window request counters shared by every process and Lambda container."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

from llm_orchestrator.store.db import Database


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
        counts: list[WindowCount] = []
        async with self._db.connection(timeout=timeout) as conn, conn.transaction():
            for name, start, _limit in windows:
                cur = await conn.execute(
                    "INSERT INTO rate_limit_counters AS c"
                    " (subject, window_name, window_start, hits) VALUES (%s, %s, %s, 1)"
                    " ON CONFLICT (subject, window_name, window_start)"
                    " DO UPDATE SET hits = c.hits + 1 RETURNING hits",
                    (subject, name, start),
                )
                row = await cur.fetchone()
                counts.append(WindowCount(name, start, int(row["hits"]) if row else 1))
            allowed = all(c.hits <= limit for c, (_, _, limit) in zip(counts, windows, strict=True))
            if not allowed:
                raise psycopg.Rollback()  # leaves the block quietly, consuming nothing
        if not allowed:
            counts = [WindowCount(c.window_name, c.window_start, c.hits - 1) for c in counts]
        return allowed, counts

    async def purge_before(self, cutoff: datetime, *, timeout: float | None = None) -> None:
        async with self._db.connection(timeout=timeout) as conn:
            await conn.execute("DELETE FROM rate_limit_counters WHERE window_start < %s", (cutoff,))
