"""``Database.rows``: the lean statement path every authenticated request takes gives the
values a psycopg cursor gives, the same errors, and survives the server forgetting its
prepared statements."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from psycopg.rows import tuple_row

from llm_orchestrator.errors import ServiceUnavailable, ValidationFailed
from llm_orchestrator.store.db import Database

STATEMENT = (
    "SELECT %(id)s::uuid AS id, %(name)s AS name, %(n)s::bigint + 1 AS n,"
    " %(at)s::timestamptz AS at, ARRAY['a', %(name)s] AS roles, %(flag)s::boolean AS flag,"
    " jsonb_build_object('k', %(name)s, 'n', %(n)s::bigint) AS doc, NULL::text AS nothing,"
    " ARRAY[1, 2]::integer[] AS hits, 1.5::numeric AS price"
    " FROM generate_series(1, %(rows)s::int)"
)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    # One connection: every statement below runs on the one whose prepared statements the
    # test tampers with.
    database = Database(database_url, min_size=1, max_size=1)
    try:
        yield database
    finally:
        await database.close()


def _params(n: int, rows: int = 2) -> dict[str, object]:
    return {
        "id": uuid.UUID(int=n),
        "name": f"ü-{n}",
        "n": n,
        "at": datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
        "flag": n % 2 == 0,
        "rows": rows,
    }


async def _by_cursor(db: Database, params: dict[str, object]) -> list[tuple[object, ...]]:
    async with db.connection() as conn:
        cur = conn.cursor(row_factory=tuple_row)
        await cur.execute(STATEMENT, params)
        return await cur.fetchall()


async def test_rows_are_the_values_a_cursor_gives(db: Database) -> None:
    # Small and large ints dump as different types: each shape is prepared on its own.
    for n in (1, 2, 40_000, 2**40):
        params = _params(n)
        assert await db.rows(STATEMENT, params) == await _by_cursor(db, params)
    assert await db.rows(STATEMENT, _params(3, rows=0)) == []


async def test_a_forgotten_prepared_statement_is_prepared_again(db: Database) -> None:
    first = await db.rows(STATEMENT, _params(1))
    async with db.connection() as conn:
        await conn.execute("DEALLOCATE ALL")

    assert await db.rows(STATEMENT, _params(1)) == first


async def test_statements_prepared_after_the_server_forgot_others_are_kept(db: Database) -> None:
    # The server forgets every statement (psycopg itself sends DEALLOCATE ALL after a
    # rollback when it holds prepared statements of its own); one prepared afterwards
    # exists, and re-preparing a forgotten one must not forget that it does.
    other = "SELECT %(x)s::int + 1 AS y"
    first = await db.rows(STATEMENT, _params(1))
    async with db.connection() as conn:
        await conn.execute("DEALLOCATE ALL")
    assert await db.rows(other, {"x": 1}) == [(2,)]  # prepared after the forgetting

    assert await db.rows(STATEMENT, _params(1)) == first  # forgotten: prepared again
    assert await db.rows(other, {"x": 2}) == [(3,)]  # still there: not prepared twice


async def test_a_value_the_database_refuses_is_a_validation_error(db: Database) -> None:
    with pytest.raises(ValidationFailed, match="A value cannot be stored"):
        await db.rows("SELECT %(id)s::uuid", {"id": "not-a-uuid"})
    # The connection is fine afterwards.
    assert await db.rows("SELECT %(x)s::int + 1", {"x": 1}) == [(2,)]


# -- more statements in flight than the pool has connections --------------------------------
# They wait their turn in ``rows`` (first come, first served) rather than in the pool's own
# queue; the wait still counts against the pool timeout, and a waiter that gives up (a
# timeout, a cancelled request) takes no connection's turn with it.

LOCK = 8_242_017


async def _holding(db: Database) -> tuple[asyncio.Task[Any], Any]:
    """A statement of ``rows`` that keeps the only connection until the returned lock
    holder lets go; returns (its task, the holder's connection)."""
    holder = await psycopg.AsyncConnection.connect(db.url, autocommit=True)
    await holder.execute("SELECT pg_advisory_lock(%s)", (LOCK,))
    held = asyncio.create_task(
        db.rows("SELECT pg_advisory_lock(%(k)s), pg_advisory_unlock(%(k)s)", {"k": LOCK})
    )
    while True:  # until the statement is waiting for the lock
        cur = await holder.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        )
        if (await cur.fetchone())[0]:
            return held, holder
        await asyncio.sleep(0.01)


async def test_more_statements_than_connections_all_answer_in_turn(database_url: str) -> None:
    db = Database(database_url, min_size=1, max_size=2)
    try:
        answers = await asyncio.gather(
            *(db.rows("SELECT %(n)s::int AS n", {"n": n}) for n in range(40))
        )
        assert [rows[0][0] for rows in answers] == list(range(40))
    finally:
        await db.close()


async def test_a_waiter_past_the_pool_timeout_is_a_503_and_takes_no_turn_away(
    database_url: str,
) -> None:
    db = Database(database_url, min_size=1, max_size=1, pool_timeout=0.2)
    try:
        held, holder = await _holding(db)
        # With a deadline, as a request has: past the pool timeout, unavailable.
        with pytest.raises(ServiceUnavailable):
            await db.rows("SELECT 1", {}, timeout=0.2)
        cancelled = asyncio.create_task(db.rows("SELECT 1", {}, timeout=30))
        await asyncio.sleep(0)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        waiting = asyncio.create_task(db.rows("SELECT 2", {}, timeout=30))
        await holder.execute("SELECT pg_advisory_unlock(%s)", (LOCK,))
        await holder.close()
        await held
        assert (await waiting)[0][0] == 2
        # The one turn is free again, for one statement at a time as for several.
        assert (await db.rows("SELECT 3", {}, timeout=5))[0][0] == 3
        together = await asyncio.gather(*(db.rows("SELECT 4", {}, timeout=5) for _ in range(5)))
        assert [rows[0][0] for rows in together] == [4] * 5
    finally:
        await db.close()


async def test_the_connection_returned_last_is_the_next_one_handed_out(database_url: str) -> None:
    # A sequence of statements stays on one warm backend instead of going round them all.
    database = Database(database_url, min_size=1, max_size=3)
    try:

        async def backend(conn: Any) -> int:
            cur = await conn.execute("SELECT pg_backend_pid() AS pid")
            row = await cur.fetchone()
            return int(row["pid"])

        async with database.connection() as a, database.connection() as b:
            first, second = await backend(a), await backend(b)  # b goes back first, then a
        assert first != second
        for _ in range(3):
            async with database.connection() as conn:
                assert await backend(conn) == first
        async with database.connection() as a, database.connection() as b:
            assert {await backend(a), await backend(b)} == {first, second}
    finally:
        await database.close()
