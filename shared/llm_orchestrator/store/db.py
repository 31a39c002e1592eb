"""The connection pool and the translation of database errors into domain errors.

The pool is opened lazily, on first use inside the running event loop: a Lambda container
pays for it on its first request and reuses it while warm; nothing connects at import time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import dict_row

from llm_orchestrator.errors import Conflict, NotFound, ServiceUnavailable, ValidationFailed

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

Connection = psycopg.AsyncConnection[dict[str, Any]]

log = logging.getLogger(__name__)


class Database:
    def __init__(
        self, url: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 10.0
    ) -> None:
        self.url = url
        self._timeout = timeout
        self._min_size = min_size
        self._max_size = max_size
        self._pool: AsyncConnectionPool[Connection] | None = None
        self._lock = asyncio.Lock()

    async def _get_pool(self) -> AsyncConnectionPool[Connection]:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    from psycopg_pool import AsyncConnectionPool

                    pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
                        self.url,
                        min_size=self._min_size,
                        max_size=self._max_size,
                        kwargs={"row_factory": dict_row, "autocommit": True},
                        open=False,
                    )
                    # No wait: a database that is down fails the request that needs it
                    # (after ``timeout``), not the first request that happens to open the pool.
                    await pool.open(wait=False)
                    self._pool = pool
        return self._pool

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled autocommit connection; wrap statements in ``conn.transaction()``."""
        from psycopg_pool import PoolTimeout

        try:
            pool = await self._get_pool()
            async with pool.connection(timeout=self._timeout) as conn, translate_errors():
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise ServiceUnavailable("Database unavailable") from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def ping(self) -> None:
        """One round trip: raises if the database cannot answer."""
        async with self.connection() as conn:
            await conn.execute("SELECT 1")

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    try:
        yield
    except pg_errors.UniqueViolation as exc:
        raise Conflict(_constraint_message(exc, "already exists")) from exc
    except pg_errors.ForeignKeyViolation as exc:
        raise NotFound(_constraint_message(exc, "refers to a missing resource")) from exc
    except psycopg.DataError as exc:
        # SQLSTATE class 22 (a value out of range or not representable) and psycopg's own
        # refusal of NUL in text: the value came from a request that validation let through.
        # The API refuses such values up front (api/storable.py, the models' bounds); this is
        # the net for a field that slipped past them, a 400 rather than a 500.
        log.warning("database refused a value: %s", exc)
        reason = exc.diag.message_primary or str(exc)
        raise ValidationFailed(f"A value cannot be stored: {reason}") from exc


def _constraint_message(exc: psycopg.Error, what: str) -> str:
    constraint = exc.diag.constraint_name or "resource"
    return f"{constraint.replace('_', ' ')} {what}"


def owner_clause(owner_id: str | None) -> tuple[str, tuple[Any, ...]]:
    """``owner_id = %s`` for a non-admin caller; no restriction when ``owner_id`` is None."""
    return ("TRUE", ()) if owner_id is None else ("owner_id = %s", (owner_id,))


async def fetch_page(
    conn: Connection,
    *,
    source: str,
    where: str = "TRUE",
    params: tuple[Any, ...] = (),
    order_by: str,
    limit: int,
    offset: int,
    columns: str = "*",
) -> tuple[list[dict[str, Any]], int]:
    """One page of rows plus the total that matches ``where``.

    ``source``, ``where``, ``order_by`` and ``columns`` are SQL fragments written by the
    repositories (never user text); every user value travels in ``params``.
    """
    # One round trip: the total rides on every row of the page. Only a page past the end
    # (no rows to carry it) needs a count of its own.
    cur = await conn.execute(
        f"SELECT {columns}, count(*) OVER () AS page_total__ FROM {source} WHERE {where}"
        f" ORDER BY {order_by} LIMIT %s OFFSET %s",
        (*params, limit, offset),
    )
    rows = await cur.fetchall()
    if rows:
        total = int(rows[0]["page_total__"])
        for row in rows:
            del row["page_total__"]
        return rows, total
    if offset == 0:
        return rows, 0
    cur = await conn.execute(f"SELECT count(*) AS total FROM {source} WHERE {where}", params)
    count_row = await cur.fetchone()
    return rows, int(count_row["total"]) if count_row else 0
