"""The hot path through the real HTTP server, each figure against an anchor in the same run.

Run: ``python -m tests.perf.bench_http`` (``make bench`` runs it with the others). Starts
an embedded PostgreSQL, two fake OpenAI servers (no latency, 1 s latency), ``llmo serve``
and a bare FastAPI app under the same ``uvicorn.run`` settings, then prints:

- ``get_workflows_rps`` / ``bare_fastapi_rps`` and their ratio (goal ≥ 0.5): authenticated
  ``GET /workflows`` (Bearer token, rate limit counted) against a FastAPI endpoint answering
  a constant JSON list, both driven by the same keep-alive load generator with
  ``CONNECTIONS`` connections for ``LOAD_SECONDS``.
- ``step_overhead_ms``: a ``CHAIN``-step chain executed with ``async: false`` against the
  zero-latency fake, wall ÷ steps − one raw OpenAI SDK call to that fake (goal ≤ 1.2 ms);
  median of ``CHAIN_RUNS``.
- ``chain_postgres_cpu_ms_per_step``: the CPU of every PostgreSQL process over those runs
  ÷ steps, when the database runs on this machine (the burst reports the same per
  execution): on two cores the database's CPU competes with the server's.
- ``transactions_per_step``: ``xact_commit + xact_rollback`` of the database
  (``pg_stat_database``) across those chain runs ÷ steps run.
- ``concurrent_500_*``: 500 one-step executions against the 1 s fake, submitted through
  ``POST .../execute`` by ``CONNECTIONS`` connections; seconds from the first submit to the
  last submit answered and to the last execution completed (goal ≤ 2.5 s), with the
  server process's CPU over the submits (and its share of one core: below 100% the submits
  wait on something other than the server's CPU) and per execution, submit included.
  Measured with one serving process, then again with ``LLMO_BENCH_WORKERS`` (default 2,
  ``llmo serve --workers``; CPU summed over the workers): ``concurrent_500_*_2_workers``.
- ``raw_sdk_500_concurrent_calls_s``: the same burst of calls made by the bare OpenAI SDK
  from this process, and its CPU per call: the part of each execution's CPU that is the
  official SDK's, whoever orchestrates.
- ``status_read_server_cpu_ms``: the server process's CPU time (user + system) per
  ``GET .../status`` of a finished 3-step execution (goal ≤ 1 ms).
- ``langgraph_*`` / ``dbos_*``: the chain and concurrent figures of LangGraph (Postgres
  checkpointer, durable before each next node) and DBOS Transact in this process on the
  same PostgreSQL and fakes (``tests/perf/anchors.py``, the ``bench`` extra), with ours ÷
  theirs. ``LLMO_BENCH_ONLY=chain,anchor-langgraph`` runs one anchor only.

Ports 18250–18259 (``LLMO_BENCH_PORT_BASE`` moves them). Every figure line ends with the
load average at that moment: the machine is shared, and a figure means little without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

from llm_orchestrator.store.runners import RUNNER_LOCK_CLASS
from tests.perf import anchors
from tests.perf.bench_engine import _database

ROOT = Path(__file__).resolve().parents[2]
# LLMO_BENCH_PORT_BASE moves all four ports, so two benches can run side by side.
PORT_BASE = int(os.environ.get("LLMO_BENCH_PORT_BASE", "18250"))
SERVER_PORT = PORT_BASE
BARE_PORT = PORT_BASE + 1
FAKE_FAST_PORT = PORT_BASE + 2
FAKE_SLOW_PORT = PORT_BASE + 3
CONNECTIONS = 32
LOAD_SECONDS = float(os.environ.get("LLMO_BENCH_LOAD_SECONDS", "4"))
CHAIN = 50
CHAIN_RUNS = int(os.environ.get("LLMO_BENCH_CHAIN_RUNS", "5"))
CONCURRENT = int(os.environ.get("LLMO_BENCH_CONCURRENT", "500"))
BENCH_WORKERS = int(os.environ.get("LLMO_BENCH_WORKERS", "2"))
"""``llmo serve --workers`` of the concurrent section's second server (the first has one);
the GET and status sections always run one worker, as their bare-FastAPI anchor does."""
ONLY = set(filter(None, os.environ.get("LLMO_BENCH_ONLY", "").split(",")))
"""Sections to run (get, chain, status, concurrent, anchor-langgraph, anchor-dbos); all
when empty."""
STATUS_READS = 400
ADMIN = "bench-admin"
ADMIN_PASSWORD = "bench-admin-password"
FAKE_KEY = "sk-bench"

BARE_APP = textwrap.dedent(
    """
    import sys
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()
    ITEMS = [{"id": str(n), "name": f"workflow-{n}", "version": 1} for n in range(5)]

    @app.get("/items")
    async def items() -> dict:
        return {"items": ITEMS, "total": len(ITEMS), "limit": 20, "offset": 0}

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
    """
)


def load() -> str:
    return f"(load {os.getloadavg()[0]:.2f})"


def report(name: str, value: str) -> None:
    print(f"{name}={value} {load()}", flush=True)


# -- processes --------------------------------------------------------------------------


def _wait_http(url: str, process: subprocess.Popen[Any], what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited during start-up")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not start")


@contextlib.contextmanager
def _process(
    args: list[str], url: str, what: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        _wait_http(url, process, what)
        yield process
    except BaseException:
        log.seek(0)
        tail = log.read().decode(errors="replace").splitlines()[-20:]
        print(f"-- {what} log tail:", *tail, sep="\n", file=sys.stderr)
        raise
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()


def _fake(port: int, latency: float) -> contextlib.AbstractContextManager[Any]:
    args = [sys.executable, "-m", "tests.fakes.openai_server", "--port", str(port)]
    args += ["--latency", str(latency), "--api-key", FAKE_KEY]
    return _process(args, f"http://127.0.0.1:{port}/", f"fake openai :{port}")


def _server(database_url: str, data_dir: Path, provider_url: str, workers: int = 1) -> Any:
    env = {
        **os.environ,
        "LLMO_DATABASE_URL": database_url,
        "LLMO_DATA_DIR": str(data_dir),
        "LLMO_ADMIN_USERNAME": ADMIN,
        "LLMO_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "LLMO_JWT_SECRET": "bench-" + "x" * 40,
        # Counted on every request as usual; only the ceiling is raised so the load test
        # measures the count, not 429s.
        "LLMO_RATE_LIMIT_ENTERPRISE_PER_MINUTE": "100000000",
        "LLMO_RATE_LIMIT_ENTERPRISE_PER_HOUR": "100000000",
        "LLMO_RATE_LIMIT_ENTERPRISE_PER_DAY": "100000000",
        "OPENAI_BASE_URL": provider_url,
        "OPENAI_API_KEY": FAKE_KEY,
    }
    args = [sys.executable, "-m", "llm_orchestrator.cli", "serve", "--port", str(SERVER_PORT)]
    args += ["--log-level", "warning", "--workers", str(workers)]
    server = _process(args, f"http://127.0.0.1:{SERVER_PORT}/api/v1/health/live", "llmo", env)
    if workers == 1:
        return server
    return _all_workers_up(server, database_url, workers)


@contextlib.contextmanager
def _all_workers_up(
    server: contextlib.AbstractContextManager[subprocess.Popen[bytes]],
    database_url: str,
    workers: int,
) -> Iterator[subprocess.Popen[bytes]]:
    """``server`` once each of its ``workers`` holds its runner lock (the first answers
    ``/health/live`` before the others have started)."""
    with server as process, psycopg.connect(database_url, autocommit=True) as conn:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            (live,) = conn.execute(  # type: ignore[misc]
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND objsubid = 2 AND classid = %s",
                (RUNNER_LOCK_CLASS,),
            ).fetchone()
            if live >= workers:
                break
            time.sleep(0.05)
        yield process


# -- a small keep-alive HTTP/1.1 load generator -------------------------------------------
# Hand-rolled so the client costs little CPU next to the server it measures (both share
# the machine's two cores); the same generator drives both sides of a ratio.


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length) if length else b""
    return status, body


def _request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _drive(port: int, request: bytes, seconds: float) -> tuple[int, list[float]]:
    """``CONNECTIONS`` connections sending ``request`` back to back for ``seconds``."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                writer.write(request)
                status, _ = await _read_response(reader)
                if status != 200:
                    raise RuntimeError(f"status {status} under load")
                latencies.append(time.perf_counter() - sent)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    return len(latencies), latencies


async def _many(port: int, requests: list[bytes]) -> list[tuple[int, bytes]]:
    """Send every request over ``CONNECTIONS`` keep-alive connections; answers in order."""
    answers: list[tuple[int, bytes]] = [(0, b"")] * len(requests)
    queue = list(enumerate(requests))
    queue.reverse()

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while queue:
                index, request = queue.pop()
                writer.write(request)
                answers[index] = await _read_response(reader)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(min(CONNECTIONS, len(requests)))))
    return answers


# -- the figures ------------------------------------------------------------------------


def _llm_step(step_id: str, depends_on: list[str]) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "llm",
        "provider": "openai",
        "model": "gpt-4",
        "prompt": "say {{x}}",
        "output": [f"out_{step_id}"],
        "depends_on": depends_on,
    }


class Api:
    def __init__(self, token: str) -> None:
        self.token = token
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{SERVER_PORT}/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=120,
        )

    def create_workflow(self, name: str, steps: list[dict[str, Any]]) -> str:
        answer = self.http.post("/workflows", json={"name": name, "steps": steps})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    def run(self, workflow_id: str) -> dict[str, Any]:
        answer = self.http.post(
            f"/workflows/{workflow_id}/execute", json={"inputs": {"x": "1"}, "async": False}
        )
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        assert body["status"] == "completed", body
        return body

    def wait_done(self, workflow_id: str, execution_id: str) -> None:
        """Long-polls until the execution has ended."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            answer = self.http.get(
                f"/workflows/{workflow_id}/status",
                params={"executionId": execution_id, "wait": 25},
            )
            if answer.json()["status"] in ("completed", "failed", "cancelled", "timed_out"):
                return
        raise AssertionError(f"execution {execution_id} did not end")


def _login() -> str:
    answer = httpx.post(
        f"http://127.0.0.1:{SERVER_PORT}/api/v1/auth/login",
        json={"username": ADMIN, "password": ADMIN_PASSWORD},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def _raw_sdk_call_ms(provider_url: str, transport: str = "httpx") -> float:
    """The median wall time of one call of the official OpenAI SDK on a warm client, with
    its default transport (``httpx``) or its aiohttp one (``aiohttp``, the
    ``openai[aiohttp]`` extra)."""
    from openai import AsyncOpenAI, DefaultAioHttpClient

    async def calls() -> float:
        client = AsyncOpenAI(
            api_key=FAKE_KEY,
            base_url=provider_url,
            http_client=DefaultAioHttpClient() if transport == "aiohttp" else None,
        )
        try:
            for _ in range(20):  # warm
                await client.chat.completions.create(
                    model="gpt-4", messages=[{"role": "user", "content": "say 1"}]
                )
            times = []
            for _ in range(200):
                started = time.perf_counter()
                await client.chat.completions.create(
                    model="gpt-4", messages=[{"role": "user", "content": "say 1"}]
                )
                times.append(time.perf_counter() - started)
            return statistics.median(times) * 1000
        finally:
            await client.close()

    return asyncio.run(calls())


def _raw_sdk_burst_cpu_ms(
    provider_url: str, count: int, transport: str = "httpx"
) -> tuple[float, float]:
    """``count`` concurrent raw OpenAI SDK calls from one fresh client (as a burst of
    executions makes them), with the SDK's default or its aiohttp transport (as
    :func:`_raw_sdk_call_ms`): wall seconds and this process's CPU ms per call. The floor
    any orchestrator calling the official SDK pays per step, measured in the same run."""
    from openai import AsyncOpenAI, DefaultAioHttpClient

    async def burst() -> tuple[float, float]:
        client = AsyncOpenAI(
            api_key=FAKE_KEY,
            base_url=provider_url,
            max_retries=0,
            http_client=DefaultAioHttpClient() if transport == "aiohttp" else None,
        )

        async def call() -> None:
            await client.chat.completions.create(
                model="gpt-4", messages=[{"role": "user", "content": "say 1"}]
            )

        try:
            await call()  # warm: the SDK's lazy imports
            cpu_before = time.process_time()
            started = time.perf_counter()
            await asyncio.gather(*(call() for _ in range(count)))
            wall = time.perf_counter() - started
            return wall, (time.process_time() - cpu_before) * 1000 / count
        finally:
            await client.close()

    return asyncio.run(burst())


@contextlib.contextmanager
def _profiled(
    server: subprocess.Popen[bytes] | None, name: str, seconds: float | None = None
) -> Iterator[None]:
    """With ``LLMO_BENCH_PROFILE=<dir>``, py-spy samples the server meanwhile and writes
    collapsed stacks to ``<dir>/<name>.txt`` (``pip install py-spy``; not a dependency), at
    ``LLMO_BENCH_PROFILE_RATE`` samples a second (py-spy's 100 by default)."""
    folder = os.environ.get("LLMO_BENCH_PROFILE")
    if not folder or server is None:
        yield
        return
    out = Path(folder) / f"{name}.txt"
    spy = subprocess.Popen(
        ["py-spy", "record", "--pid", str(server.pid), "--format", "raw", "--output", str(out)]
        + ["--nonblocking", "--duration", str(int(seconds or LOAD_SECONDS) + 1)]
        + ["--rate", os.environ.get("LLMO_BENCH_PROFILE_RATE", "100")]
        # The workers of ``--workers N`` too (one serving process has no children).
        + ["--subprocesses"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.wait(timeout=60)


GET_ROUNDS = int(os.environ.get("LLMO_BENCH_GET_ROUNDS", "2"))
"""Ours and the bare app alternate this many times (A-B, A-B, …): on a shared machine the
load changes from one second to the next, and interleaving spreads it over both sides."""


def _cpu_seconds(process: psutil.Process) -> float:
    """The process's CPU time, and its children's (the workers of ``--workers N``)."""
    total = 0.0
    for one in (process, *process.children(recursive=True)):
        with contextlib.suppress(psutil.Error):
            times = one.cpu_times()
            total += times.user + times.system
    return total


def _machine_busy_seconds() -> float:
    """CPU time the whole machine has spent busy (every core, every process)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def _postgres(database_url: str) -> psutil.Process | None:
    """The PostgreSQL server's postmaster when it runs on this machine (the embedded one, or
    a local ``LLMO_TEST_DATABASE_URL``), else None: its CPU is the other half of a figure."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        (backend,) = conn.execute("SELECT pg_backend_pid()").fetchone()  # type: ignore[misc]
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(backend).parent()
            if parent is not None and "postgres" in parent.name():
                return parent
    return None


def _postgres_cpu_seconds(postmaster: psutil.Process) -> float:
    """CPU of every PostgreSQL process: the live ones (backends, WAL writer, checkpointer…)
    and the backends that have exited since it started (reaped, so counted as its
    children's)."""
    times = postmaster.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in postmaster.children():
        with contextlib.suppress(psutil.Error):
            own = child.cpu_times()
            total += own.user + own.system
    return total


def _measured(port: int, request: bytes, process: subprocess.Popen[bytes]) -> tuple[float, float]:
    """Requests per second under load, and the serving process's CPU ms per request."""
    watched = psutil.Process(process.pid)
    asyncio.run(_drive(port, request, 0.5))  # warm-up: connections, caches, pool
    cpu_before = _cpu_seconds(watched)
    started = time.perf_counter()
    count, _ = asyncio.run(_drive(port, request, LOAD_SECONDS))
    elapsed = time.perf_counter() - started
    cpu = _cpu_seconds(watched) - cpu_before
    return count / elapsed, cpu * 1000 / count


def _bench_get(api: Api, server: subprocess.Popen[bytes]) -> None:
    """Ours against the bare app, alternating; prints each round, then the ratio of the
    medians for throughput and for server CPU per request (CPU is the steadier figure on a
    loaded machine: it excludes the time spent waiting for a core)."""
    ours_request = _request("GET", "/api/v1/workflows", {"Authorization": f"Bearer {api.token}"})
    ours: list[tuple[float, float]] = []
    bare: list[tuple[float, float]] = []
    with _process(
        [sys.executable, "-c", BARE_APP, str(BARE_PORT)],
        f"http://127.0.0.1:{BARE_PORT}/items",
        "bare fastapi",
    ) as bare_server:
        for round_ in range(GET_ROUNDS):
            with _profiled(server if round_ == 0 else None, "get_workflows"):
                ours.append(_measured(SERVER_PORT, ours_request, server))
            report(
                f"get_workflows_rps[{round_}]",
                f"{ours[-1][0]:.0f} server_cpu_ms_per_request={ours[-1][1]:.3f}",
            )
            bare.append(_measured(BARE_PORT, _request("GET", "/items", {}), bare_server))
            report(
                f"bare_fastapi_rps[{round_}]",
                f"{bare[-1][0]:.0f} server_cpu_ms_per_request={bare[-1][1]:.3f}",
            )
    ours_rps = statistics.median(r for r, _ in ours)
    bare_rps = statistics.median(r for r, _ in bare)
    ours_cpu = statistics.median(c for _, c in ours)
    bare_cpu = statistics.median(c for _, c in bare)
    report("get_workflows_rps", f"{ours_rps:.0f} (median of {GET_ROUNDS})")
    report("bare_fastapi_rps", f"{bare_rps:.0f} (median of {GET_ROUNDS})")
    report("get_workflows_server_cpu_ms", f"{ours_cpu:.3f} (bare fastapi {bare_cpu:.3f})")
    report(
        "get_workflows_vs_bare_ratio",
        f"{ours_rps / bare_rps:.2f} (goal >= 0.5); by server CPU per request"
        f" {bare_cpu / ours_cpu:.2f}",
    )


def _bench_chain(
    api: Api, database_url: str, provider_url: str, server: subprocess.Popen[bytes] | None = None
) -> None:
    steps = [_llm_step(f"s{i}", [f"s{i - 1}"] if i else []) for i in range(CHAIN)]
    workflow_id = api.create_workflow("bench-chain", steps)
    api.run(workflow_id)  # warm: SDK import, connections
    raw_ms = _raw_sdk_call_ms(provider_url)
    before = anchors.transactions(database_url)
    process = psutil.Process(server.pid) if server is not None else None
    postmaster = _postgres(database_url)
    cpu_before = process.cpu_times() if process is not None else None
    postgres_before = _postgres_cpu_seconds(postmaster) if postmaster is not None else 0.0
    per_step = []
    with _profiled(server, "chain", seconds=CHAIN_RUNS * CHAIN * 0.05):
        for _ in range(CHAIN_RUNS):
            started = time.perf_counter()
            api.run(workflow_id)
            per_step.append((time.perf_counter() - started) * 1000 / CHAIN)
    cpu_after = process.cpu_times() if process is not None else None
    if postmaster is not None:
        postgres_ms = (_postgres_cpu_seconds(postmaster) - postgres_before) * 1000
        report("chain_postgres_cpu_ms_per_step", f"{postgres_ms / (CHAIN * CHAIN_RUNS):.2f}")
    after = anchors.transactions(database_url)
    wall = statistics.median(per_step)
    report("raw_sdk_call_ms", f"{raw_ms:.2f}")
    report(
        "step_overhead_ms",
        f"{wall - raw_ms:.2f} (wall/step {wall:.2f}, min {min(per_step) - raw_ms:.2f};"
        " goal <= 1.2)",
    )
    if importlib.util.find_spec("aiohttp") is not None:
        # The SDK's aiohttp transport costs less per call than its default one: the
        # overhead against it too, so a server that uses it cannot hide its own cost there.
        aiohttp_ms = _raw_sdk_call_ms(provider_url, "aiohttp")
        report(
            "raw_sdk_call_aiohttp_ms",
            f"{aiohttp_ms:.2f}; step overhead against it {wall - aiohttp_ms:.2f}",
        )
    if cpu_before is not None and cpu_after is not None:
        # CPU rather than wall: on a shared machine the wall time includes waiting for a core.
        cpu = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
        report("chain_server_cpu_ms_per_step", f"{cpu * 1000 / (CHAIN * CHAIN_RUNS):.2f}")
    # The snapshot query itself is one transaction.
    ours_transactions = (after - before - 1) / (CHAIN * CHAIN_RUNS)
    report("transactions_per_step", f"{ours_transactions:.2f}")
    ours = wall - raw_ms
    for name, measure in anchors.CHAIN_ANCHORS.items():
        if not _wanted(f"anchor-{name}"):
            continue
        try:
            figures = measure(database_url, provider_url, CHAIN, CHAIN_RUNS)
        except Exception as exc:  # an anchor that cannot run here says why, in the output
            report(f"{name}_step_overhead_ms", f"unavailable: {type(exc).__name__}: {exc}")
            continue
        theirs = figures.median - raw_ms
        report(
            f"{name}_step_overhead_ms",
            f"{theirs:.2f} (wall/step {figures.median:.2f}); ours/theirs {ours / theirs:.2f}",
        )
        report(f"{name}_transactions_per_step", f"{figures.transactions_per_step:.2f}")


def _bench_concurrent(
    api: Api,
    database_url: str,
    provider_url: str,
    server: subprocess.Popen[bytes] | None = None,
    *,
    fake: subprocess.Popen[bytes] | None = None,
    workers: int = 1,
    anchored: bool = True,
) -> None:
    """``workers``: the server's (figures of more than one are named ``…_<n>_workers``);
    ``fake``: the fake provider's process, whose CPU is part of the machine's split;
    ``anchored``: the raw-SDK and anchor figures follow."""
    named = "" if workers == 1 else f"_{workers}_workers"
    workflow_id = api.create_workflow("bench-one", [_llm_step("s", [])])
    # Warm, as a running server is: the SDK's lazy imports, its clients, the pool.
    warm = [
        api.http.post(f"/workflows/{workflow_id}/execute", json={"inputs": {"x": "w"}})
        for _ in range(3)
    ]
    for answer in warm:
        api.wait_done(workflow_id, answer.json()["execution_id"])
    if workers > 1:
        _warm_every_worker(api, database_url, workflow_id, workers)
    body = json.dumps({"inputs": {"x": "1"}}).encode()
    request = _request(
        "POST",
        f"/api/v1/workflows/{workflow_id}/execute",
        {"Authorization": f"Bearer {api.token}"},
        body,
    )
    postmaster = _postgres(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        (db_start,) = conn.execute("SELECT clock_timestamp()").fetchone()  # type: ignore[misc]
        watched = psutil.Process(server.pid) if server is not None else None
        cpu_before = _cpu_seconds(watched) if watched is not None else 0.0
        postgres_before = _postgres_cpu_seconds(postmaster) if postmaster is not None else 0.0
        fake_before = _cpu_seconds(psutil.Process(fake.pid)) if fake is not None else 0.0
        bench_before = sum(psutil.Process().cpu_times()[:2])
        machine_before = _machine_busy_seconds()
        with _profiled(server, f"concurrent{named}"):
            started = time.perf_counter()
            answers = asyncio.run(_many(SERVER_PORT, [request] * CONCURRENT))
            submitted = time.perf_counter() - started
            submit_cpu = (_cpu_seconds(watched) - cpu_before) if watched is not None else 0.0
            report(
                f"concurrent_{CONCURRENT}_submit_s{named}",
                f"{submitted:.2f}; server CPU {submit_cpu:.2f} s"
                f" ({submit_cpu / submitted:.0%} of one core)",
            )
            refused = [(status, body) for status, body in answers if status != 202]
            if refused:
                # Counted, not fatal: the run goes on to the anchors with the accepted ones.
                report(
                    f"concurrent_{CONCURRENT}_refused{named}",
                    f"{len(refused)}, e.g. {refused[0]!r}",
                )
            ids = [json.loads(body)["execution_id"] for status, body in answers if status == 202]
            deadline = time.monotonic() + 120
            while True:
                (pending,) = conn.execute(  # type: ignore[misc]
                    "SELECT count(*) FROM executions WHERE id = ANY(%s)"
                    " AND status NOT IN ('completed', 'failed', 'cancelled', 'timed_out')",
                    (ids,),
                ).fetchone()
                if pending == 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        (failed, last) = conn.execute(  # type: ignore[misc]
            "SELECT count(*) FILTER (WHERE status <> 'completed'), max(completed_at)"
            " FROM executions WHERE id = ANY(%s)",
            (ids,),
        ).fetchone()
        if pending or failed:
            rows = conn.execute(
                "SELECT e.status, r.status, r.attempts, r.error::text FROM executions e"
                " LEFT JOIN step_runs r ON r.execution_id = e.id"
                " WHERE e.id = ANY(%s) AND e.status <> 'completed' LIMIT 5",
                (ids,),
            ).fetchall()
            raise AssertionError(f"{pending} unfinished, {failed} not completed: {rows}")
        if workers > 1:
            shares = conn.execute(
                "SELECT count(*) FROM executions WHERE id = ANY(%s) GROUP BY runner_id"
                " ORDER BY 1 DESC",
                (ids,),
            ).fetchall()
            report(
                f"concurrent_{CONCURRENT}_per_worker{named}",
                " / ".join(str(share) for (share,) in shares),
            )
    ours = (last - db_start).total_seconds()
    total_cpu = (_cpu_seconds(watched) - cpu_before) if watched is not None else 0.0
    # Includes the bench's own few status polls above: a handful of statements against 500
    # executions' worth.
    postgres_cpu = ""
    if postmaster is not None:
        postgres_ms = (_postgres_cpu_seconds(postmaster) - postgres_before) * 1000
        postgres_cpu = f"; PostgreSQL CPU {postgres_ms / CONCURRENT:.1f} ms"
    report(
        f"concurrent_{CONCURRENT}_all_completed_s{named}",
        f"{ours:.2f} (goal <= 2.5); server CPU {total_cpu * 1000 / CONCURRENT:.1f} ms"
        f" per execution, submit included{postgres_cpu}",
    )
    # Where the whole machine's CPU went, per execution: the burst is bound by it.
    fake_ms = (_cpu_seconds(psutil.Process(fake.pid)) - fake_before) * 1000 if fake else 0.0
    bench_ms = (sum(psutil.Process().cpu_times()[:2]) - bench_before) * 1000
    machine_ms = (_machine_busy_seconds() - machine_before) * 1000
    report(
        f"concurrent_{CONCURRENT}_machine_cpu_ms{named}",
        f"{machine_ms / CONCURRENT:.1f} per execution, of which fake provider"
        f" {fake_ms / CONCURRENT:.1f}, this bench's client {bench_ms / CONCURRENT:.1f}"
        f" (wall {ours:.2f} s x {psutil.cpu_count()} cores ="
        f" {ours * (psutil.cpu_count() or 1) * 1000 / CONCURRENT:.1f} ms per execution)",
    )
    if not anchored:
        return
    wall, cpu_ms = _raw_sdk_burst_cpu_ms(provider_url, CONCURRENT)
    report(
        f"raw_sdk_{CONCURRENT}_concurrent_calls_s",
        f"{wall:.2f}; client CPU {cpu_ms:.1f} ms per call (the official SDK alone, no"
        " orchestration)",
    )
    if importlib.util.find_spec("aiohttp") is not None:
        wall, cpu_ms = _raw_sdk_burst_cpu_ms(provider_url, CONCURRENT, "aiohttp")
        report(
            f"raw_sdk_aiohttp_{CONCURRENT}_concurrent_calls_s",
            f"{wall:.2f}; client CPU {cpu_ms:.1f} ms per call (the SDK's aiohttp transport)",
        )
    for name, measure in anchors.CONCURRENT_ANCHORS.items():
        if not _wanted(f"anchor-{name}"):
            continue
        try:
            theirs = measure(database_url, provider_url, CONCURRENT)
        except Exception as exc:
            report(f"{name}_concurrent_{CONCURRENT}_s", f"unavailable: {type(exc).__name__}: {exc}")
            continue
        report(
            f"{name}_concurrent_{CONCURRENT}_s",
            f"{theirs:.2f} (in-process, no HTTP); ours/theirs {ours / theirs:.2f}",
        )


def _warm_every_worker(api: Api, database_url: str, workflow_id: str, workers: int) -> None:
    """An execution run by each worker before the burst (a worker's first one imports the
    provider SDK): through new connections, which land on one worker or another, until
    every worker has run one."""
    warmed: set[int] = set()
    with psycopg.connect(database_url, autocommit=True) as conn:
        for _ in range(50):
            if len(warmed) >= workers:
                return
            with httpx.Client(base_url=str(api.http.base_url), headers=api.http.headers) as one:
                answer = one.post(f"/workflows/{workflow_id}/execute", json={"inputs": {"x": "w"}})
            execution_id = answer.json()["execution_id"]
            api.wait_done(workflow_id, execution_id)
            (runner,) = conn.execute(  # type: ignore[misc]
                "SELECT runner_id FROM executions WHERE id = %s", (execution_id,)
            ).fetchone()
            warmed.add(runner)
    raise AssertionError(f"only {len(warmed)} of {workers} workers ran a warm-up execution")


def _bench_status_cpu(api: Api, server: subprocess.Popen[bytes]) -> None:
    workflow_id = api.create_workflow(
        "bench-status", [_llm_step(f"s{i}", [f"s{i - 1}"] if i else []) for i in range(3)]
    )
    execution_id = api.run(workflow_id)["execution_id"]
    request = _request(
        "GET",
        f"/api/v1/workflows/{workflow_id}/status?executionId={execution_id}",
        {"Authorization": f"Bearer {api.token}"},
    )
    asyncio.run(_many(SERVER_PORT, [request] * 50))  # warm
    process = psutil.Process(server.pid)
    with _profiled(server, "status_read"):
        before = process.cpu_times()
        answers = asyncio.run(_many(SERVER_PORT, [request] * STATUS_READS))
        after = process.cpu_times()
    assert all(status == 200 for status, _ in answers)
    cpu = (after.user - before.user) + (after.system - before.system)
    report("status_read_server_cpu_ms", f"{cpu * 1000 / STATUS_READS:.2f} (goal <= 1)")


def _wanted(section: str) -> bool:
    """``anchor-<name>`` sections run with the chain and concurrent ones unless
    ``LLMO_BENCH_ONLY`` names sections and none of them is an anchor."""
    if section.startswith("anchor-"):
        return not ONLY or section in ONLY or not any(s.startswith("anchor-") for s in ONLY)
    return not ONLY or section in ONLY


def main() -> None:
    # A terminated bench still stops its servers and database (the finally blocks run).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    data_dir = Path(tempfile.mkdtemp(prefix="llmo-bench-http-"))
    try:
        with (
            _database() as database_url,
            _fake(FAKE_FAST_PORT, 0.0),
            _fake(FAKE_SLOW_PORT, 1.0) as slow_fake,
        ):
            fast_url = f"http://127.0.0.1:{FAKE_FAST_PORT}/v1"
            slow_url = f"http://127.0.0.1:{FAKE_SLOW_PORT}/v1"
            if _wanted("get") or _wanted("chain") or _wanted("status"):
                with _server(database_url, data_dir, fast_url) as server:
                    api = Api(_login())
                    if _wanted("get"):
                        _bench_get(api, server)
                    if _wanted("chain"):
                        _bench_chain(api, database_url, fast_url, server)
                    if _wanted("status"):
                        _bench_status_cpu(api, server)
            if _wanted("concurrent"):
                # One serving process, then BENCH_WORKERS of them, in the same run.
                counts = sorted({1, BENCH_WORKERS})
                for workers in counts:
                    with _server(database_url, data_dir, slow_url, workers) as server:
                        api = Api(_login())
                        _bench_concurrent(
                            api,
                            database_url,
                            slow_url,
                            server,
                            fake=slow_fake,
                            workers=workers,
                            anchored=workers == counts[-1],
                        )
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
