"""pgvector's HNSW index kinds: new indexes are halfvec, older vector indexes keep working.

Through the pgvector adapter (the code a ``vector_search`` step runs) on a real PostgreSQL;
the nearest documents are checked against an exact cosine search in numpy.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import numpy as np
import psycopg
import pytest
from psycopg import sql

from llm_orchestrator.providers.errors import ProviderBadRequest
from llm_orchestrator.store.db import Database
from llm_orchestrator.store.vector_tables import SCHEMA, halfvec_index_name, table_name
from llm_orchestrator.vectorstores import EnvSettingResolver, VectorRecord
from llm_orchestrator.vectorstores.pgvector import PgVectorStore

DIM = 64
STORED = 300
QUERIES = 25
EF_STORED = 1000
EF_QUERIES = 40


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[PgVectorStore]:
    db = Database(database_url, min_size=0, max_size=2)
    store = PgVectorStore(EnvSettingResolver({}), timeout_seconds=30, own_database=db)
    try:
        yield store
    finally:
        await store.aclose()
        await db.close()


def _unit(rows: int, dim: int, rng: np.random.Generator) -> np.ndarray:  # type: ignore[type-arg]
    vectors = rng.standard_normal((rows, dim))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)  # type: ignore[no-any-return]


def _index_definitions(url: str, index: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s"
            " AND indexdef LIKE '%%USING hnsw%%' ORDER BY indexname",
            (SCHEMA, table_name(index)),
        ).fetchall()
    return [row[0] for row in rows]


async def _fill(store: PgVectorStore, index: str, vectors: np.ndarray) -> None:  # type: ignore[type-arg]
    records = [VectorRecord(f"doc-{n}", v.tolist(), f"document {n}") for n, v in enumerate(vectors)]
    await store.upsert(index, records, namespace=None)


async def _assert_nearest_match_exact_search(
    store: PgVectorStore,
    index: str,
    stored: np.ndarray,  # type: ignore[type-arg]
    rng: np.random.Generator,
) -> None:
    # Queries near a stored vector: the exact nearest document is unambiguous.
    for n in rng.choice(len(stored), QUERIES, replace=False):
        query = stored[n] + 0.3 * _unit(1, stored.shape[1], rng)[0]
        exact = stored @ (query / np.linalg.norm(query))
        best = np.argsort(-exact)[:5]

        found = await store.search(index, query.tolist(), top_k=5, filter=None, namespace=None)

        assert found[0].id == f"doc-{best[0]}"
        assert found[0].text == f"document {best[0]}"
        # The scores are the full-precision cosine similarities, best first.
        assert found[0].score == pytest.approx(exact[best[0]], abs=1e-6)
        assert [m.score for m in found] == sorted((m.score for m in found), reverse=True)


async def test_a_new_index_is_a_halfvec_hnsw_and_finds_the_exact_nearest_document(
    store: PgVectorStore, database_url: str
) -> None:
    rng = np.random.default_rng(11)
    stored = _unit(STORED, DIM, rng)

    await _fill(store, "kb", stored)

    (definition,) = _index_definitions(database_url, "kb")
    assert halfvec_index_name("kb") in definition
    assert f"(embedding)::halfvec({DIM})" in definition
    assert "halfvec_cosine_ops" in definition
    await _assert_nearest_match_exact_search(store, "kb", stored, rng)


async def test_the_search_runs_on_the_halfvec_index(
    store: PgVectorStore, owner_database_url: str
) -> None:
    rng = np.random.default_rng(12)
    # A 300-row table is cheaper to scan (or to read by its primary key) and sort than to
    # search through an index: sessions of this database (the adapter's pool connects
    # after this) are told to avoid scans and sorts, so the plan uses the HNSW index exactly
    # when the ORDER BY is the index's own expression.
    with psycopg.connect(owner_database_url, autocommit=True) as conn:
        dbname = sql.Identifier(conn.info.dbname)
        for setting in ("enable_seqscan", "enable_sort"):
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET {} = off").format(dbname, sql.Identifier(setting))
            )
    await _fill(store, "kb", _unit(STORED, DIM, rng))

    for _ in range(3):
        query = _unit(1, DIM, rng)[0].tolist()
        found = await store.search("kb", query, top_k=5, filter=None, namespace=None)
        assert len(found) == 5

    # A backend reports its statistics when idle, within ten seconds: wait for them.
    with psycopg.connect(owner_database_url, autocommit=True) as conn:
        deadline = time.monotonic() + 20
        while (scans := _scans(conn, halfvec_index_name("kb"))) < 3:
            assert time.monotonic() < deadline, f"{scans} index scans of 3 searches"
            time.sleep(0.2)


def _scans(conn: psycopg.Connection, index: str) -> int:  # type: ignore[type-arg]
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = %s", (index,)
    ).fetchone()
    return int(row[0]) if row else 0


async def test_an_index_made_before_halfvec_keeps_its_vector_index_and_its_answers(
    store: PgVectorStore, owner_database_url: str, database_url: str
) -> None:
    """A table as earlier versions created it: ``embedding vector_cosine_ops``."""
    rng = np.random.default_rng(13)
    stored = _unit(STORED, DIM, rng)
    table = sql.Identifier(SCHEMA, table_name("old-kb"))
    with psycopg.connect(owner_database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (namespace text NOT NULL, id text NOT NULL,"
                " embedding vector({}) NOT NULL, text text NOT NULL,"
                " metadata jsonb NOT NULL DEFAULT '{{}}',"
                " updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (namespace, id))"
            ).format(table, sql.Literal(DIM))
        )
        conn.execute(
            sql.SQL("CREATE INDEX {} ON {} USING hnsw (embedding vector_cosine_ops)").format(
                sql.Identifier(f"{table_name('old-kb')}_hnsw"), table
            )
        )
        conn.execute(sql.SQL("GRANT ALL ON {} TO PUBLIC").format(table))
    before = _index_definitions(owner_database_url, "old-kb")

    await _fill(store, "old-kb", stored)

    await _assert_nearest_match_exact_search(store, "old-kb", stored, rng)
    assert _index_definitions(database_url, "old-kb") == before
    assert "vector_cosine_ops" in before[0]


async def test_vectors_wider_than_2000_dimensions_get_an_hnsw_index_too(
    store: PgVectorStore, database_url: str
) -> None:
    rng = np.random.default_rng(14)
    stored = _unit(40, 3072, rng)

    await _fill(store, "wide", stored)

    (definition,) = _index_definitions(database_url, "wide")
    assert "halfvec(3072)" in definition
    found = await store.search("wide", stored[7].tolist(), top_k=3, filter=None, namespace=None)
    assert found[0].id == "doc-7"
    assert found[0].score == pytest.approx(1.0, abs=1e-6)


async def test_searches_differing_in_index_top_k_or_filter_each_get_their_own_answer(
    store: PgVectorStore,
) -> None:
    """The adapter keeps one composed statement per index, ``top_k`` and number of filter
    keys: a search must never run another search's statement."""
    rng = np.random.default_rng(15)
    wide, other = _unit(40, DIM, rng), _unit(40, DIM, rng)
    await store.upsert(
        "a",
        [
            VectorRecord(
                f"a-{n}", v.tolist(), f"a {n}", {"lang": "en" if n % 2 else "fr", "year": n % 3}
            )
            for n, v in enumerate(wide)
        ],
        namespace=None,
    )
    await store.upsert(
        "b",
        [VectorRecord(f"b-{n}", v.tolist(), f"b {n}") for n, v in enumerate(other)],
        namespace=None,
    )

    async def ids(index: str, query: np.ndarray, top_k: int, **filter: object) -> list[str]:  # type: ignore[type-arg]
        found = await store.search(
            index, query.tolist(), top_k=top_k, filter=filter or None, namespace=None
        )
        return [match.id for match in found]

    assert len(await ids("a", wide[0], 3)) == 3
    assert len(await ids("a", wide[0], 5)) == 5
    assert (await ids("b", other[4], 3))[0] == "b-4"
    english = await ids("a", wide[0], 5, lang="en")
    assert len(english) == 5 and all(int(i[2:]) % 2 == 1 for i in english)
    year_one = await ids("a", wide[0], 5, year=1)
    assert len(year_one) == 5 and all(int(i[2:]) % 3 == 1 for i in year_one)
    assert (await ids("a", wide[7], 1))[0] == "a-7"


async def test_metadata_comes_back_exactly_as_stored(store: PgVectorStore) -> None:
    metadata = {
        "lang": "fr",
        "tags": ["a", "ç", {"deep": [1, 2.5, None, True]}],
        "quote": 'say "hi"\n',
        "n": 12345678901234,
    }
    records = [
        VectorRecord("with", [1.0, 0.0, 0.0], "with metadata", metadata),
        VectorRecord("without", [0.0, 1.0, 0.0], "without metadata"),
    ]
    await store.upsert("meta", records, namespace=None)

    found = await store.search("meta", [1.0, 0.1, 0.0], top_k=2, filter=None, namespace=None)

    assert [(m.id, m.metadata) for m in found] == [("with", metadata), ("without", {})]


async def test_a_query_value_beyond_float32_is_refused_as_bad_data(store: PgVectorStore) -> None:
    await store.upsert("range", [VectorRecord("a", [1.0, 0.0], "a")], namespace=None)
    # The query travels as float32: 1e39 does not fit (it becomes infinity, which pgvector
    # refuses); a permanent error naming the data, not a crash.
    with pytest.raises(ProviderBadRequest, match="refused the data"):
        await store.search("range", [1e39, 0.0], top_k=1, filter=None, namespace=None)
    found = await store.search("range", [1e4, 0.0], top_k=1, filter=None, namespace=None)
    assert [m.id for m in found] == ["a"]


async def test_ef_search_trades_time_for_finding_the_true_nearest_document(
    store: PgVectorStore, owner_database_url: str
) -> None:
    """Random queries in random data, the hardest case for HNSW: a one-candidate search
    often stops at a local optimum, a 1,000-candidate one finds the exact nearest."""
    with psycopg.connect(owner_database_url, autocommit=True) as conn:
        # A table this small is cheaper to scan and sort (an exact search): the plan must
        # be the HNSW index for ef_search to mean anything (see the test above).
        dbname = sql.Identifier(conn.info.dbname)
        for setting in ("enable_seqscan", "enable_sort"):
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET {} = off").format(dbname, sql.Identifier(setting))
            )
    rng = np.random.default_rng(64)
    stored = _unit(EF_STORED, DIM, rng)
    await _fill(store, "kb-ef", stored)
    hits = {}
    for ef_search in (1, None, 1000):
        hits[ef_search] = 0
        for query in _unit(EF_QUERIES, DIM, np.random.default_rng(7)):
            best = int(np.argmax(stored @ query))
            # ef_search 1 means top_k 1 (at least top_k candidates are searched); otherwise
            # top 10: the candidates are ranked at half precision, the rows returned by
            # their exact scores, so the true nearest comes first once it is a candidate.
            matches = await store.search(
                "kb-ef",
                query.tolist(),
                top_k=1 if ef_search == 1 else 10,
                filter=None,
                namespace=None,
                ef_search=ef_search,
            )
            hits[ef_search] += matches[0].id == f"doc-{best}"
    assert hits[1000] == EF_QUERIES, hits
    assert hits[1] < hits[None], hits
