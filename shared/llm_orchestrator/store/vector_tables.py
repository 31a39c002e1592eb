"""pgvector indexes: one table per index in the ``vectors`` schema.

An index name from a workflow is data: it only ever reaches SQL as a quoted identifier
built by ``psycopg.sql``, and the table is named by a deterministic mapping
(:func:`table_name`) because PostgreSQL identifiers are limited to 63 bytes. A table is
created on the first upsert into its index, with that upsert's dimension, a cosine HNSW
index and the index name as its comment; the dimension never changes afterwards.

The HNSW index is built over the vectors cast to ``halfvec`` (16-bit floats): half the size
of a ``vector`` index (a 100,000 × 1,536 index is ~390 MB instead of ~780 MB), so twice as
much of it stays in ``shared_buffers``, and up to 4,000 dimensions instead of 2,000. The
table keeps the full-precision vectors and the scores are computed from them; only the
candidate search runs at half precision (recall@5 measured in the README). Tables created
before this keep their ``vector`` index and are searched through it: a search orders by
the expression of whichever cosine HNSW index the table has.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import struct
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.rows import tuple_row
from psycopg.types import TypeInfo
from psycopg.types.json import Jsonb

from llm_orchestrator.store.db import Connection, Database

__all__ = [
    "HNSW_MAX_DIMENSIONS",
    "IndexKind",
    "SCHEMA",
    "VectorDimensionMismatch",
    "VectorIndexMissing",
    "VectorRow",
    "VectorTables",
    "halfvec_index_name",
    "table_name",
]

SCHEMA = "vectors"
"""Created by migration 0010 in the orchestrator's own database; the app role may CREATE in it."""
HNSW_MAX_DIMENSIONS = 4000
"""pgvector's HNSW limit for ``halfvec``; wider indexes are searched exactly."""
MAX_EF_SEARCH = 1000
"""pgvector's ceiling for ``hnsw.ef_search``."""
DEFAULT_EF_SEARCH = 40
_MAX_STATEMENTS = 256
"""Composed search statements kept (one per table, top_k and number of filter keys)."""

_SLUG = re.compile(r"[^a-z0-9]+")


def table_name(index: str) -> str:
    """``ix_<slug>_<hash>``: readable, at most 63 bytes, and distinct for distinct names
    (the slug alone would map ``KB`` and ``kb`` to one table)."""
    slug = _SLUG.sub("_", index.lower()).strip("_")[:40]
    digest = hashlib.sha256(index.encode()).hexdigest()[:12]
    return f"ix_{slug}_{digest}" if slug else f"ix_{digest}"


class IndexKind(StrEnum):
    """Which cosine HNSW index a table has: it decides the ORDER BY expression, which
    must be the index's own expression for PostgreSQL to use it."""

    HALFVEC = "halfvec"
    """``(embedding::halfvec(n)) halfvec_cosine_ops``: what new tables get."""
    VECTOR = "vector"
    """``embedding vector_cosine_ops``: tables created before halfvec indexes."""
    NONE = "none"
    """No HNSW index (too many dimensions, or dropped): an exact scan."""


@dataclass(frozen=True, slots=True)
class _Shape:
    dimension: int
    kind: IndexKind


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
        self._shapes: dict[str, _Shape] = {}
        """Table name → dimension and index kind; a table's dimension never changes once
        created, and its index kind only by hand (a restart picks that up)."""
        self._statements: dict[tuple[str, _Shape, int, int], bytes] = {}
        self._registered: weakref.WeakSet[Connection] = weakref.WeakSet()
        """The pooled connections that know the ``vector`` type already."""

    async def upsert(
        self,
        index: str,
        namespace: str,
        rows: Sequence[tuple[str, Sequence[float], str, Mapping[str, Any]]],
    ) -> None:
        from pgvector import Vector

        dimension = len(rows[0][1])
        table, qualified = _target(index)
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
                shape = await self._shape(conn, table, qualified)
                if shape is None:
                    await self._create(conn, index, table, dimension)
                    shape = await self._shape(conn, table, qualified)
                existing = shape.dimension if shape else 0
                if existing != dimension:
                    raise VectorDimensionMismatch(index, existing, dimension)
                try:
                    async with conn.transaction(), conn.cursor() as cur:
                        await cur.executemany(statement, values)
                    return
                except pg_errors.UndefinedTable:
                    # Dropped behind our back since its dimension was cached: create it again.
                    self._shapes.pop(qualified, None)
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
        ef_search: int | None = None,
    ) -> list[VectorRow]:
        """The ``top_k`` nearest rows, best first. ``ef_search``: the HNSW candidate list
        (:data:`DEFAULT_EF_SEARCH` when None; never fewer than ``top_k``)."""
        table, qualified = _target(index)
        filters = list((filter or {}).items())
        # The query vector travels once, in binary (the pgvector adapter's binary dumper),
        # however often the statement names it.
        query = vector if isinstance(vector, list) else list(vector)
        params: dict[str, Any] = {"q": _query_vector(query), "ns": namespace}
        for n, (key, value) in enumerate(filters):
            params[f"k{n}"] = key
            params[f"v{n}"] = Jsonb(value)
        async with self._db.connection() as conn:
            # The common case (a known connection, a cached shape and statement) awaits
            # nothing but the search itself.
            if conn not in self._registered and not await self._register(conn):
                raise VectorIndexMissing(index)
            shape = self._shapes.get(qualified) or await self._shape(conn, table, qualified)
            if shape is None:
                raise VectorIndexMissing(index)
            if shape.dimension != len(vector):
                raise VectorDimensionMismatch(index, shape.dimension, len(vector))
            statement = self._statement(conn, table, qualified, shape, top_k, len(filters))
            try:
                found = await _nearest(
                    conn,
                    statement,
                    params,
                    top_k=top_k,
                    ef_search=ef_search,
                    filtered=bool(filters),
                )
            except pg_errors.UndefinedTable:
                # Dropped behind our back since its dimension was cached.
                self._shapes.pop(qualified, None)
                self._statements.clear()
                raise VectorIndexMissing(index) from None
        # Rows are (id, score, text, metadata as JSON text) tuples.
        rows = [VectorRow(id_, score, text, _metadata(meta)) for id_, score, text, meta in found]
        if shape.kind is IndexKind.HALFVEC:
            # The candidates come in half-precision order; the scores are exact: best first
            # by the score the caller sees (a stable sort keeps ties in index order).
            rows.sort(key=lambda row: row.score, reverse=True)
        return rows

    def _statement(
        self,
        conn: Connection,
        table: sql.Identifier,
        qualified: str,
        shape: _Shape,
        top_k: int,
        filters: int,
    ) -> bytes:
        """The search statement, composed once per table, index kind, ``top_k`` and number
        of filter keys (keys and values are parameters) and kept as the bytes psycopg sends:
        the same text every time, so psycopg prepares it on a connection after a few uses.

        LIMIT is a literal, not a parameter: PostgreSQL's generic plan for an unknown LIMIT
        is a sequential scan and a sort of the whole table (seconds at 100,000 rows); with
        the number in the text every plan is the HNSW index scan. ``top_k`` is a validated
        int (1..1000). The ORDER BY is the index's own expression, or no index is used.
        """
        key = (qualified, shape, top_k, filters)
        cached = self._statements.get(key)
        if cached is None:
            conditions: list[sql.Composable] = [sql.SQL("namespace = %(ns)s")]
            # Equality of the JSON values (1 = 1.0, "en" = "en"), one key at a time.
            conditions += [
                sql.SQL("metadata -> {} = {}").format(
                    sql.Placeholder(f"k{n}"), sql.Placeholder(f"v{n}")
                )
                for n in range(filters)
            ]
            cached = (
                sql.SQL(
                    "SELECT id, 1 - (embedding <=> %(q)s) AS score, text, metadata::text FROM {}"
                    " WHERE {} ORDER BY {} LIMIT {}"
                )
                .format(
                    table,
                    sql.SQL(" AND ").join(conditions),
                    _order_by(shape),
                    sql.Literal(int(top_k)),
                )
                .as_bytes(conn)
            )
            if len(self._statements) >= _MAX_STATEMENTS:
                self._statements.clear()
            self._statements[key] = cached
        return cached

    async def _shape(
        self, conn: Connection, table: sql.Identifier, qualified: str
    ) -> _Shape | None:
        cached = self._shapes.get(qualified)
        if cached is None:
            cached = await _shape(conn, qualified)
            if cached is not None:
                self._shapes[qualified] = cached
        return cached

    async def _register(self, conn: Connection) -> bool:
        """Teach this connection the ``vector`` type (the pgvector package's adapter);
        False when the database has no such type yet."""
        from pgvector.psycopg.vector import register_vector_info

        if conn in self._registered:
            return True
        if self._vector_type is None:
            self._vector_type = await TypeInfo.fetch(conn, "vector")
            if self._vector_type is None:
                if not self._prepare:
                    return False
                await _prepare(conn)
                self._vector_type = await TypeInfo.fetch(conn, "vector")
        register_vector_info(conn, self._vector_type)
        self._registered.add(conn)
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
                        " USING hnsw ((embedding::halfvec({})) halfvec_cosine_ops)"
                    ).format(sql.Identifier(halfvec_index_name(index)), table, sql.Literal(dim))
                )


def halfvec_index_name(index: str) -> str:
    """The name of the HNSW index a new table gets (``<table>_hnsw`` is the ``vector``
    index of a table made before halfvec)."""
    return f"{table_name(index)}_hnsw_half"


def _query_vector(values: list[float]) -> Any:
    """The query as the pgvector adapter's ``Vector``, its binary form packed in one
    ``struct.pack`` call: the same bytes ``Vector(values).to_binary()`` makes (big-endian
    float32 rounded to nearest, behind the dimension and a zero), in a third of the time
    (``Vector`` copies the list into an array, then copies and byte-swaps it again). Values
    that ``struct`` will not pack (a float32 overflow, a non-number) take ``Vector``'s own
    path, so they fail exactly as before."""
    try:
        packed = struct.pack(f">HH{len(values)}f", len(values), 0, *values)
    except (struct.error, OverflowError, TypeError):
        from pgvector import Vector

        return Vector(values)
    return _packed_vector_class()(packed, values)


@functools.cache
def _packed_vector_class() -> type[Any]:
    """Defined on first use: pgvector is imported lazily (cold starts of handlers that
    never search). A ``Vector`` subclass, so the dumpers ``register_vector_info`` registers
    for ``Vector`` take it, in binary or, should a text dumper be asked for, in text."""
    from pgvector import Vector

    class PackedVector(Vector):
        __slots__ = ("_packed", "_values")

        def __init__(self, packed: bytes, values: list[float]) -> None:
            self._packed = packed
            self._values = values

        def to_binary(self) -> bytes:
            return self._packed

        def to_text(self) -> str:
            return str(Vector(self._values).to_text())

    return PackedVector


def _metadata(text: str) -> dict[str, Any]:
    """A row's metadata from its JSON text: ``json.loads`` of a ``str`` (psycopg's jsonb
    loader hands it bytes, which it first sniffs for an encoding), and no parse at all for
    the empty object most documents have."""
    if text == "{}":
        return {}
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@functools.lru_cache(maxsize=1024)
def _target(index: str) -> tuple[sql.Identifier, str]:
    """The index's table as an identifier, and as the qualified name its cached shape and
    statements are kept under (computed once per index name, not hashed on every search).
    ``table_name`` yields only ``[a-z0-9_]``, so the quoting is exactly ``as_string``'s."""
    name = table_name(index)
    return sql.Identifier(SCHEMA, name), f'"{SCHEMA}"."{name}"'


def _order_by(shape: _Shape) -> sql.Composable:
    if shape.kind is IndexKind.HALFVEC:
        half = sql.SQL("halfvec({})").format(sql.Literal(shape.dimension))
        return sql.SQL("(embedding::{}) <=> (%(q)s::{})").format(half, half)
    return sql.SQL("embedding <=> %(q)s")


async def _nearest(
    conn: Connection,
    statement: bytes,
    params: dict[str, Any],
    *,
    top_k: int,
    ef_search: int | None,
    filtered: bool,
) -> list[tuple[Any, ...]]:
    """The statement's rows as tuples (no dict built per row)."""
    wanted = DEFAULT_EF_SEARCH if ef_search is None else ef_search
    ef_search = min(max(wanted, top_k), MAX_EF_SEARCH)
    cur = conn.cursor(row_factory=tuple_row)
    if ef_search == DEFAULT_EF_SEARCH and not filtered:
        # The common case needs no session settings: one round trip.
        await cur.execute(statement, params)
        return await cur.fetchall()
    # The HNSW candidate list must hold at least top_k rows, and with a filter the scan
    # goes on past the rows the filter drops (pgvector >= 0.8) rather than returning fewer
    # than top_k matches. One pipelined round trip for the transaction and its settings.
    async with conn.pipeline(), conn.transaction():
        await conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(ef_search),))
        if filtered:
            await conn.execute("SELECT set_config('hnsw.iterative_scan', 'strict_order', true)")
        await cur.execute(statement, params)
    return await cur.fetchall()


async def _shape(conn: Connection, qualified: str) -> _Shape | None:
    """The table's vector dimension (``atttypmod`` of ``vector(n)`` is n) and the kind of its
    valid cosine HNSW index (halfvec preferred when it has both), None if absent."""
    cur = await conn.execute(
        "SELECT a.atttypmod AS dim, ("
        "  SELECT array_agg(o.opcname::text) FROM pg_index i"
        "  JOIN pg_opclass o ON o.oid = i.indclass[0]"
        "  WHERE i.indrelid = a.attrelid AND i.indisvalid AND i.indnatts = 1"
        "   AND o.opcname IN ('halfvec_cosine_ops', 'vector_cosine_ops')) AS opclasses"
        " FROM pg_attribute a"
        " WHERE a.attrelid = to_regclass(%s) AND a.attname = 'embedding'",
        (qualified,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    opclasses = row["opclasses"] or []
    if "halfvec_cosine_ops" in opclasses:
        kind = IndexKind.HALFVEC
    elif "vector_cosine_ops" in opclasses:
        kind = IndexKind.VECTOR
    else:
        kind = IndexKind.NONE
    return _Shape(int(row["dim"]), kind)


async def _prepare(conn: Connection) -> None:
    await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
