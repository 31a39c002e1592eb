"""``Database.rows``: the lean statement path every authenticated request takes gives the
values a psycopg cursor gives, the same errors, and survives the server forgetting its
prepared statements."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from psycopg.rows import tuple_row

from llm_orchestrator.errors import ValidationFailed
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


async def test_a_value_the_database_refuses_is_a_validation_error(db: Database) -> None:
    with pytest.raises(ValidationFailed, match="A value cannot be stored"):
        await db.rows("SELECT %(id)s::uuid", {"id": "not-a-uuid"})
    # The connection is fine afterwards.
    assert await db.rows("SELECT %(x)s::int + 1", {"x": 1}) == [(2,)]
