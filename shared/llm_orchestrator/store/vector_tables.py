"""pgvector indexes: one table per index in the ``vectors`` schema.

An index name from a workflow is data: it only ever reaches SQL as a quoted identifier
built by ``psycopg.sql``, and the table is named by a deterministic mapping
(:func:`table_name`) because PostgreSQL identifiers are limited to 63 bytes. A table is
created on the first upsert into its index, with that upsert's dimension, a cosine HNSW
index and the index name as its comment; the dimension never changes afterwards.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.types import TypeInfo
from psycopg.types.json import Jsonb

from llm_orchestrator.store.db import Connection, Database

__all__ = [
    "HNSW_MAX_DIMENSIONS",
    "SCHEMA",
    "VectorDimensionMismatch",
    "VectorIndexMissing",
    "VectorRow",
    "VectorTables",
    "table_name",
]

SCHEMA = "vectors"
"""Created by migration 0010 in the orchestrator's own database; the app role may CREATE in it."""
HNSW_MAX_DIMENSIONS = 2000
"""pgvector's HNSW limit for the ``vector`` type; wider indexes are searched exactly."""
MAX_EF_SEARCH = 1000
"""pgvector's ceiling for ``hnsw.ef_search``."""
DEFAULT_EF_SEARCH = 40

_SLUG = re.compile(r"[^a-z0-9]+")


def table_name(index: str) -> str:
    """``ix_<slug>_<hash>``: readable, at most 63 bytes, and distinct for distinct names
    (the slug alone would map ``KB`` and ``kb`` to one table)."""
    slug = _SLUG.sub("_", index.lower()).strip("_")[:40]
    digest = hashlib.sha256(index.encode()).hexdigest()[:12]
    return f"ix_{slug}_{digest}" if slug else f"ix_{digest}"


class VectorIndexMissing(LookupError):
    """Search in an index that no upsert has created."""


class VectorDimensionMismatch(ValueError):
    def __init__(self, index: str, expected: int, got: int) -> None:
        super().__init__(
            f"index '{index}' holds {expected}-dimension vectors; got {got} dimensions "
            "(a model with another output size needs its own index)"
        )
        self.expected = expected
        self.got = got


@dataclass(frozen=True, slots=True)
class VectorRow:
    id: str
    score: float
    text: str
    metadata: dict[str, Any]


class VectorTables:
    """Upsert and search over one PostgreSQL database that has the ``vector`` extension.

    ``prepare_database`` makes the extension and schema on first use; the orchestrator's own
    database has them from its migrations (the app role may not create extensions).
    """

    def __init__(self, db: Database, *, prepare_database: bool = False) -> None:
        self._db = db
        self._prepare = prepare_database
        self._vector_type: TypeInfo | None = None
        self._dimensions: dict[str, int] = {}
        """Table name → dimension; a table's dimension never changes once created."""

    async def upsert(
        self,
        index: str,
        namespace: str,
        rows: Sequence[tuple[str, Sequence[float], str, Mapping[str, Any]]],
    ) -> None:
        from pgvector import Vector

        dimension = len(rows[0][1])
        table = _table(index)
        values = [
            (namespace, id_, Vector(list(vector)), text, Jsonb(dict(metadata)))
            for id_, vector, text, metadata in rows
        ]
        statement = sql.SQL(
            "INSERT INTO {} (namespace, id, embedding, text, metadata)"
            " VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (namespace, id) DO UPDATE SET embedding = EXCLUDED.embedding,"
            " text = EXCLUDED.text, metadata = EXCLUDED.metadata, updated_at = now()"
        ).format(table)
        async with self._db.connection() as conn:
            await self._register(conn)
            for attempt in range(2):
                existing = await self._dimension(conn, table)
                if existing is None:
                    await self._create(conn, index, table, dimension)
                    existing = await self._dimension(conn, table)
                if existing != dimension:
                    raise VectorDimensionMismatch(index, existing or 0, dimension)
                try:
                    async with conn.transaction(), conn.cursor() as cur:
                        await cur.executemany(statement, values)
                    return
                except pg_errors.UndefinedTable:
                    # Dropped behind our back since its dimension was cached: create it again.
                    self._dimensions.pop(table.as_string(conn), None)
                    if attempt:
                        raise

    async def search(
        self,
        index: str,
        namespace: str,
        vector: Sequence[float],
        *,
        top_k: int,
        filter: Mapping[str, Any] | None,
    ) -> list[VectorRow]:
        from pgvector import Vector

        table = _table(index)
        query = Vector(list(vector))
        conditions = [sql.SQL("namespace = %s")]
        params: list[Any] = [query, namespace]
        for key, value in (filter or {}).items():
            # Equality of the JSON values (1 = 1.0, "en" = "en"), one key at a time.
            conditions.append(sql.SQL("metadata -> %s = %s"))
            params.extend([key, Jsonb(value)])
        params.append(query)
        # LIMIT is a literal, not a parameter: psycopg prepares a statement it runs often,
        # and PostgreSQL's generic plan for an unknown LIMIT is a sequential scan and a sort
        # of the whole table (seconds at 100,000 rows); with the number in the text every
        # plan is the HNSW index scan. ``top_k`` is a validated int (1..1000).
        statement = sql.SQL(
            "SELECT id, text, metadata, 1 - (embedding <=> %s) AS score FROM {}"
            " WHERE {} ORDER BY embedding <=> %s LIMIT {}"
        ).format(table, sql.SQL(" AND ").join(conditions), sql.Literal(int(top_k)))
        async with self._db.connection() as conn:
            if not await self._register(conn):
                raise VectorIndexMissing(index)
            existing = await self._dimension(conn, table)
            if existing is None:
                raise VectorIndexMissing(index)
            if existing != len(vector):
                raise VectorDimensionMismatch(index, existing, len(vector))
            try:
                found = await _nearest(conn, statement, params, top_k=top_k, filtered=bool(filter))
            except pg_errors.UndefinedTable:
                # Dropped behind our back since its dimension was cached.
                self._dimensions.pop(table.as_string(conn), None)
                raise VectorIndexMissing(index) from None
        return [
            VectorRow(row["id"], float(row["score"]), row["text"], row["metadata"]) for row in found
        ]

    async def _dimension(self, conn: Connection, table: sql.Identifier) -> int | None:
        name = table.as_string(conn)
        cached = self._dimensions.get(name)
        if cached is None:
            cached = await _dimension(conn, table)
            if cached is not None:
                self._dimensions[name] = cached
        return cached

    async def _register(self, conn: Connection) -> bool:
        """Teach this connection the ``vector`` type (the pgvector package's adapter);
        False when the database has no such type yet."""
        from pgvector.psycopg.vector import register_vector_info

        if self._vector_type is None:
            self._vector_type = await TypeInfo.fetch(conn, "vector")
            if self._vector_type is None:
                if not self._prepare:
                    return False
                await _prepare(conn)
                self._vector_type = await TypeInfo.fetch(conn, "vector")
        register_vector_info(conn, self._vector_type)
        return True

    async def _create(self, conn: Connection, index: str, table: sql.Identifier, dim: int) -> None:
        if self._prepare:
            await _prepare(conn)
        name = table_name(index)
        async with conn.transaction():
            # Two first upserts into one new index may race: serialise them on the name.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (name,))
            await conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} ("
                    " namespace text NOT NULL,"
                    " id text NOT NULL,"
                    " embedding vector({}) NOT NULL,"
                    " text text NOT NULL,"
                    " metadata jsonb NOT NULL DEFAULT '{{}}',"
                    " updated_at timestamptz NOT NULL DEFAULT now(),"
                    " PRIMARY KEY (namespace, id))"
                ).format(table, sql.Literal(dim))
            )
            await conn.execute(
                sql.SQL("COMMENT ON TABLE {} IS {}").format(
                    table, sql.Literal(f"llm-orchestrator vector index {index!r}")
                )
            )
            if dim <= HNSW_MAX_DIMENSIONS:
                await conn.execute(
                    sql.SQL(
                        "CREATE INDEX IF NOT EXISTS {} ON {}"
                        " USING hnsw (embedding vector_cosine_ops)"
                    ).format(sql.Identifier(f"{name}_hnsw"), table)
                )


def _table(index: str) -> sql.Identifier:
    return sql.Identifier(SCHEMA, table_name(index))


async def _nearest(
    conn: Connection, statement: sql.Composed, params: list[Any], *, top_k: int, filtered: bool
) -> list[dict[str, Any]]:
    ef_search = min(max(DEFAULT_EF_SEARCH, top_k), MAX_EF_SEARCH)
    if ef_search == DEFAULT_EF_SEARCH and not filtered:
        # The common case needs no session settings: one round trip.
        cur = await conn.execute(statement, params)
        return await cur.fetchall()
    # The HNSW candidate list must hold at least top_k rows, and with a filter the scan
    # goes on past the rows the filter drops (pgvector >= 0.8) rather than returning fewer
    # than top_k matches. One pipelined round trip for the transaction and its settings.
    async with conn.pipeline(), conn.transaction():
        await conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(ef_search),))
        if filtered:
            await conn.execute("SELECT set_config('hnsw.iterative_scan', 'strict_order', true)")
        cur = await conn.execute(statement, params)
    return await cur.fetchall()


async def _dimension(conn: Connection, table: sql.Identifier) -> int | None:
    """The table's vector dimension (``atttypmod`` of ``vector(n)`` is n), None if absent."""
    qualified = table.as_string(conn)
    cur = await conn.execute(
        "SELECT a.atttypmod AS dim FROM pg_attribute a"
        " WHERE a.attrelid = to_regclass(%s) AND a.attname = 'embedding'",
        (qualified,),
    )
    row = await cur.fetchone()
    return None if row is None else int(row["dim"])


async def _prepare(conn: Connection) -> None:
    await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
