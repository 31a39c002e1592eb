"""``llmo serve --workers 2``: two serving processes on one database behave as one server.

One server for the whole module (a real ``llmo serve`` child process with its uvicorn
supervisor, a real PostgreSQL database of its own, a fake OpenAI server in a process of its
own). A request reaches the worker its TCP connection was accepted by, so each test talks to
a chosen worker through a client pinned to one keep-alive connection, whose worker is known
from the runner that owns an execution submitted through it; every pinned request checks
that it went out on that same connection. The kill -9 test runs last: it kills a worker.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from llm_orchestrator.store.roles import APP_ROLE
from llm_orchestrator.store.runners import RUNNER_LOCK_CLASS
from tests.integration.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, JWT_SECRET
from tests.integration.execution_support import llm_step
from tests.integration.serve_support import ROOT, serve_env
from tests.support import free_port

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("serve_workers")]

FAKE_KEY = "sk-workers-test"
LATENCY = 0.3
"""The fake provider's answer time: a three-step chain is still running a moment later."""
HANG = 90.0
"""A deadline against a hang on a loaded 2-core machine, never a wait."""
T = TypeVar("T")


def until(condition: Callable[[], T | None], what: str, timeout: float = HANG) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def fake_provider() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--port", "0"]
        + ["--latency", str(LATENCY), "--api-key", FAKE_KEY],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("FAKE_OPENAI_READY "), line
        yield line.split(" ", 1)[1]
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def module_database(pg_server_url: str, template_db: str) -> Iterator[tuple[str, str]]:
    """(owner URL, app URL) of a database for this module's server alone."""
    name = f"llmo_w_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')  # type: ignore[arg-type]
        app_role = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,))
        has_app_role = app_role.fetchone() is not None
    owner = make_conninfo(pg_server_url, dbname=name)
    yield owner, make_conninfo(owner, user=APP_ROLE) if has_app_role else owner
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


class Server:
    def __init__(self, app_url: str, owner_url: str, data_dir: Path, provider: str) -> None:
        self.owner_url = owner_url
        self.port = free_port()
        self.log_path = data_dir / "serve.log"
        self.provider = provider
        env = serve_env(
            LLMO_DATABASE_URL=app_url,
            LLMO_MIGRATION_DATABASE_URL=owner_url,
            LLMO_DATA_DIR=str(data_dir),
            LLMO_ADMIN_USERNAME=ADMIN_USERNAME,
            LLMO_ADMIN_PASSWORD=ADMIN_PASSWORD,
            LLMO_JWT_SECRET=JWT_SECRET,
            LLMO_RUNNER_CHECK_SECONDS="0.5",
            OPENAI_BASE_URL=provider,
            OPENAI_API_KEY=FAKE_KEY,
        )
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llm_orchestrator.cli", "serve", "--port", str(self.port)]
            + ["--workers", "2", "--log-level", "info"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        until(lambda: len(self.live_runners()) == 2 or self._exited(), "two live workers")
        assert self.process.poll() is None, self.log()
        login = httpx.post(
            f"{self.base_url}/auth/login",
            json={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD},
            timeout=HANG,
        )
        assert login.status_code == 200, login.text
        self.headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        steps = [llm_step("probe", "probe {{x}}", "out")]
        probe = httpx.post(
            f"{self.base_url}/workflows",
            json={"name": "probe", "steps": steps},
            headers=self.headers,
            timeout=HANG,
        )
        self.probe_workflow = probe.json()["id"]

    def _exited(self) -> bool:
        return self.process.poll() is not None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def log(self) -> str:
        return self.log_path.read_text()

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.owner_url, autocommit=True) as conn:
            cur = conn.execute(query, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def live_runners(self) -> dict[int, int]:
        """runner id → pid, of the runners holding their lock."""
        rows = self.sql(
            "SELECT r.id, r.pid FROM runners r JOIN pg_locks l ON l.locktype = 'advisory'"
            " AND l.granted AND l.classid = %s AND l.objid = r.id AND l.objsubid = 2"
            # pg_locks is the whole cluster's: another database's runners have the same ids.
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            RUNNER_LOCK_CLASS,
        )
        return {row[0]: row[1] for row in rows}

    def owner_of(self, execution_id: str) -> int | None:
        return self.sql("SELECT runner_id FROM executions WHERE id = %s", execution_id)[0][0]

    def status(self, execution_id: str) -> str:
        return str(self.sql("SELECT status FROM executions WHERE id = %s", execution_id)[0][0])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=HANG)
        self._log.close()


@pytest.fixture(scope="module")
def server(
    module_database: tuple[str, str], tmp_path_factory: pytest.TempPathFactory, fake_provider: str
) -> Iterator[Server]:
    owner_url, app_url = module_database
    running = Server(app_url, owner_url, tmp_path_factory.mktemp("workers"), fake_provider)
    try:
        yield running
    finally:
        running.stop()


class Reconnected(AssertionError):
    """The pinned client's connection was replaced: it may lead to another worker now."""


class Pinned:
    """A client on exactly one keep-alive connection, so on exactly one worker."""

    def __init__(self, server: Server) -> None:
        self.client = httpx.Client(
            base_url=server.base_url,
            headers=server.headers,
            timeout=HANG,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )
        self.address: Any = None

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        response = self.client.request(method, url, **kwargs)
        address = response.extensions["network_stream"].get_extra_info("client_addr")
        if self.address is not None and address != self.address:
            raise Reconnected(f"{self.address} became {address}")
        self.address = address
        return response

    def submit(self, workflow_id: str, inputs: dict[str, Any]) -> str:
        response = self.request(
            "POST", f"/workflows/{workflow_id}/execute", json={"inputs": inputs}
        )
        assert response.status_code == 202, response.text
        execution_id: str = response.json()["execution_id"]
        return execution_id


def pinned_workers(server: Server) -> dict[int, Pinned]:
    """A pinned client for each live worker, by runner id: a new connection's worker is the
    runner of the execution submitted through it (each worker runs what it accepts)."""
    found: dict[int, Pinned] = {}
    deadline = time.monotonic() + HANG
    while len(found) < 2:
        assert time.monotonic() < deadline, "new connections all went to one worker"
        pinned = Pinned(server)
        execution_id = pinned.submit(server.probe_workflow, {"x": uuid.uuid4().hex})
        runner = server.owner_of(execution_id)
        assert runner is not None
        found.setdefault(runner, pinned)
    return found


def fresh(pinned: dict[int, Pinned], runner: int, server: Server) -> Pinned:
    """``pinned[runner]`` with its connection just used (so not about to be closed idle)."""
    try:
        pinned[runner].request("GET", "/health/live")
    except Reconnected:
        pinned.update(pinned_workers(server))
    return pinned[runner]


def provider_prompts(server: Server) -> Counter[str]:
    log = httpx.get(server.provider.removesuffix("/v1") + "/_fake/requests").json()
    return Counter(
        message["content"]
        for request in log
        if request["path"] == "/v1/chat/completions" and request["status"] == 200
        for message in request["body"]["messages"]
    )


def set_latency(server: Server, seconds: float) -> None:
    answer = httpx.post(
        server.provider.removesuffix("/v1") + "/_fake/latency", json={"seconds": seconds}
    )
    assert answer.status_code == 200, answer.text


def chain_workflow(server: Server, name: str) -> str:
    steps = [
        llm_step("a", f"{name} a {{{{x}}}}", "out_a"),
        llm_step("b", f"{name} b {{{{out_a}}}}", "out_b", depends_on=["a"]),
        llm_step("c", f"{name} c {{{{out_b}}}}", "out_c", depends_on=["b"]),
    ]
    response = httpx.post(
        f"{server.base_url}/workflows",
        json={"name": name, "steps": steps},
        headers=server.headers,
        timeout=HANG,
    )
    assert response.status_code == 201, response.text
    workflow_id: str = response.json()["id"]
    return workflow_id


def test_a_burst_is_run_by_the_workers_that_accepted_it(server: Server) -> None:
    pinned = pinned_workers(server)
    workflow_id = chain_workflow(server, "burst")
    submitted: dict[str, int] = {}
    for runner in list(pinned):
        for n in range(8):
            client = fresh(pinned, runner, server)
            submitted[client.submit(workflow_id, {"x": f"{runner}-{n}"})] = runner
    until(lambda: all(server.status(e) == "completed" for e in submitted), "the burst to complete")
    for execution_id, runner in submitted.items():
        assert server.owner_of(execution_id) == runner
    assert set(submitted.values()) == set(server.live_runners())
    prompts = provider_prompts(server)
    for runner in pinned:
        for n in range(8):
            assert prompts[f"burst a {runner}-{n}"] == 1


def test_pause_and_resume_sent_to_the_other_worker_release_the_owners_run(
    server: Server,
) -> None:
    pinned = pinned_workers(server)
    owner, other = list(pinned)
    workflow_id = chain_workflow(server, "resume")
    client = fresh(pinned, owner, server)
    # The first step answers in 5 s: the pause arrives while it runs, on a slow machine too.
    set_latency(server, 5.0)
    try:
        execution_id = client.submit(workflow_id, {"x": "r"})
        query = {"executionId": execution_id}
        paused = fresh(pinned, other, server).request(
            "POST", f"/workflows/{workflow_id}/pause", params=query
        )
    finally:
        set_latency(server, LATENCY)
    assert paused.status_code == 200, paused.text
    # The owner's run parks its next step (the task token is stored in the database).
    until(
        lambda: server.sql("SELECT 1 FROM parked_tasks WHERE execution_id = %s", execution_id),
        "a parked step",
    )
    resumed = fresh(pinned, other, server).request(
        "POST", f"/workflows/{workflow_id}/resume", params=query
    )
    assert resumed.status_code == 200, resumed.text

    until(lambda: server.status(execution_id) == "completed", "the resumed execution to end")
    assert server.owner_of(execution_id) == owner, "the run moved to another worker"
    prompts = provider_prompts(server)
    assert prompts["resume a r"] == 1
    assert prompts["resume b echo: resume a r"] == 1
    assert prompts["resume c echo: resume b echo: resume a r"] == 1
    assert re.search(
        rf"runner {owner}: resume of execution {execution_id}, asked by runner {other}",
        server.log(),
    )


def test_cancel_sent_to_the_other_worker_stops_the_owners_run(server: Server) -> None:
    pinned = pinned_workers(server)
    owner, other = list(pinned)
    workflow_id = chain_workflow(server, "cancel")
    client = fresh(pinned, owner, server)
    # The first step's call is still in flight when the cancel arrives, however slow the
    # machine: the fake answers it after a minute (the test is over long before).
    set_latency(server, 60.0)
    try:
        execution_id = client.submit(workflow_id, {"x": "k"})
        until(
            lambda: server.sql(
                "SELECT 1 FROM step_runs WHERE execution_id = %s AND step_id = 'a'",
                execution_id,
            ),
            "the first step to begin",
        )
        cancelled = fresh(pinned, other, server).request(
            "POST", f"/workflows/{workflow_id}/cancel", params={"executionId": execution_id}
        )
    finally:
        set_latency(server, LATENCY)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert re.search(
        rf"runner {owner}: cancel of execution {execution_id}, asked by runner {other}",
        server.log(),
    )
    # The cancel is final, whichever worker is asked (the owner stopped its run; that it
    # holds no run any more is checked in-process, in test_runner_ownership).
    status = fresh(pinned, owner, server).request(
        "GET", f"/workflows/{workflow_id}/status", params={"executionId": execution_id}
    )
    assert status.json()["status"] == "cancelled"

    # A restore sent to the other worker: the old run is gone from the owner, the new one
    # runs where the restore was asked, once.
    restored = fresh(pinned, other, server).request(
        "POST",
        f"/state/{workflow_id}/restore",
        json={"checkpointId": _checkpoint(fresh(pinned, other, server), workflow_id, execution_id)},
    )
    assert restored.status_code == 200, restored.text
    until(lambda: server.status(execution_id) == "completed", "the restored run to end")
    assert server.owner_of(execution_id) == other
    prompts = provider_prompts(server)
    assert prompts["cancel b echo: cancel a k"] == 1
    assert prompts["cancel c echo: cancel b echo: cancel a k"] == 1


def _checkpoint(client: Pinned, workflow_id: str, execution_id: str) -> str:
    made = client.request(
        "POST", f"/state/{workflow_id}/checkpoints", json={"executionId": execution_id}
    )
    assert made.status_code == 201, made.text
    checkpoint_id: str = made.json()["id"]
    return checkpoint_id


def test_a_schedule_fires_once_per_tick(server: Server) -> None:
    workflow_id = chain_workflow(server, "schedule")
    created = httpx.post(
        f"{server.base_url}/workflows/{workflow_id}/triggers",
        json={"type": "schedule", "schedule": "rate(1 hour)", "inputs": {"x": "s"}},
        headers=server.headers,
        timeout=HANG,
    )
    assert created.status_code == 201, created.text
    trigger_id = created.json()["id"]

    def fired() -> int:
        rows = server.sql("SELECT count(*) FROM executions WHERE workflow_id = %s", workflow_id)
        return int(rows[0][0])

    for tick in range(1, 4):
        # This tick is due now: both workers' schedulers see it within a second.
        server.sql(
            "UPDATE triggers SET next_fire_at = now() - interval '1 second' WHERE id = %s",
            trigger_id,
        )
        until(
            lambda: (
                server.sql(
                    "SELECT 1 FROM triggers WHERE id = %s AND next_fire_at > now()", trigger_id
                )
                and fired() >= tick  # noqa: B023 (called within this iteration)
            ),
            "the tick to fire",
        )
        assert fired() == tick
    # Each firing has ended (so no late second firing of any tick is still on its way).
    until(
        lambda: (
            server.sql(
                "SELECT count(*) FROM executions WHERE workflow_id = %s AND status = 'completed'",
                workflow_id,
            )[0][0]
            == 3
        ),
        "the fired executions to end",
    )
    assert fired() == 3


def test_metrics_count_the_requests_of_every_worker(server: Server) -> None:
    pinned = pinned_workers(server)
    first, second = list(pinned)

    def listed() -> int:
        scraped = fresh(pinned, first, server).request("GET", "/metrics")
        assert scraped.status_code == 200, scraped.text
        found = re.search(
            r'orchestrator_http_requests_total\{route="/api/v1/workflows",status="200"\} (\S+)',
            scraped.text,
        )
        return int(float(found.group(1))) if found else 0

    before = listed()
    for _ in range(3):
        assert fresh(pinned, first, server).request("GET", "/workflows").status_code == 200
    for _ in range(4):
        assert fresh(pinned, second, server).request("GET", "/workflows").status_code == 200
    # The other worker's counts arrive within a flush interval: wait for them, then exactly.
    until(lambda: listed() >= before + 7, "the other worker's counts")
    assert listed() == before + 7


def test_a_secret_written_through_one_worker_is_used_by_the_other_at_once(
    server: Server,
) -> None:
    pinned = pinned_workers(server)
    reader, writer = list(pinned)
    workflow_id = chain_workflow(server, "secret")
    query = {"executionId": ""}

    def run_on_reader(x: str) -> str:
        execution_id = fresh(pinned, reader, server).submit(workflow_id, {"x": x})
        query["executionId"] = execution_id
        until(
            lambda: server.status(execution_id) not in ("pending", "running"),
            "the execution to end",
        )
        return server.status(execution_id)

    # The reader has looked the provider key up (and cached that no secret overrides it).
    assert run_on_reader("before") == "completed"
    for value, expected in (("sk-not-the-right-key", "failed"), (FAKE_KEY, "completed")):
        written = fresh(pinned, writer, server).request(
            "POST", "/admin/secrets", json={"key": "OPENAI_API_KEY", "value": value}
        )
        assert written.status_code == 200, written.text
        assert run_on_reader(value[-5:]) == expected


def test_a_rate_limit_is_counted_once_for_both_workers(server: Server) -> None:
    pinned = pinned_workers(server)
    created = httpx.post(
        f"{server.base_url}/admin/users",
        headers=server.headers,
        json={
            "username": "limited",
            "email": "limited@example.com",
            "password": "limited-password",
            "roles": ["developer"],
            "tier": "free",
        },
        timeout=HANG,
    )
    assert created.status_code == 201, created.text
    login = httpx.post(
        f"{server.base_url}/auth/login",
        json={"username": "limited", "password": "limited-password"},
        timeout=HANG,
    )
    user = {"Authorization": f"Bearer {login.json()['access_token']}"}
    remaining: list[tuple[int, int]] = []
    for n in range(8):
        # Alternately on each worker: one count between them, so every request (whichever
        # worker answers it) leaves one fewer, unless the minute's window starts afresh.
        answered = fresh(pinned, list(pinned)[n % 2], server).request(
            "GET", "/workflows", headers=user
        )
        assert answered.status_code == 200, answered.text
        remaining.append(
            (
                int(answered.headers["X-RateLimit-Reset"]),
                int(answered.headers["X-RateLimit-Remaining"]),
            )
        )
    for (window, before), (next_window, after) in zip(remaining, remaining[1:], strict=False):
        assert after == (before - 1 if next_window == window else 59), remaining


def test_a_worker_killed_mid_execution_has_its_executions_finished_once(server: Server) -> None:
    pinned = pinned_workers(server)
    victim, survivor = list(pinned)
    workflow_id = chain_workflow(server, "kill")
    ids = [fresh(pinned, victim, server).submit(workflow_id, {"x": f"k{n}"}) for n in range(6)]

    def committed() -> set[tuple[str, str]]:
        rows = server.sql(
            "SELECT execution_id, step_id FROM step_runs"
            " WHERE status = 'completed' AND execution_id = ANY(%s)",
            ids,
        )
        return {(row[0], row[1]) for row in rows}

    until(lambda: len(committed()) >= 6, "some committed steps")
    victim_pid = server.live_runners()[victim]
    subprocess.run(["kill", "-9", str(victim_pid)], check=True)
    done_before_kill = committed()
    assert len(done_before_kill) < 18, "everything finished before the kill"

    until(lambda: all(server.status(e) == "completed" for e in ids), "the orphans to be finished")
    owners = {server.owner_of(e) for e in ids}
    assert victim not in owners
    prompts = provider_prompts(server)
    for n in range(6):
        # Every step exactly once when committed before the kill; at least once otherwise
        # (a call in flight at the kill has no committed outputs, so it runs again).
        for prompt in (f"kill a k{n}", f"kill b echo: kill a k{n}"):
            assert prompts[prompt] >= 1
    prompt_of = {
        "a": "kill a {x}",
        "b": "kill b echo: kill a {x}",
        "c": "kill c echo: kill b echo: kill a {x}",
    }
    for execution_id, step_id in done_before_kill:
        x = f"k{ids.index(execution_id)}"
        assert prompts[prompt_of[step_id].format(x=x)] == 1, (execution_id, step_id)
    # uvicorn's supervisor replaced the killed worker: two runners again, one of them new.
    live = until(lambda: len(server.live_runners()) == 2 and server.live_runners(), "a new one")
    assert victim not in live and survivor in live


def test_sigterm_stops_every_worker_and_releases_their_leases(server: Server) -> None:
    pids = list(server.live_runners().values())
    assert len(pids) == 2
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=HANG) == 0
    assert not any(psutil.pid_exists(pid) for pid in pids), "a worker outlived its supervisor"
    assert server.live_runners() == {}


def test_workers_stop_when_their_supervisor_is_killed(
    pg_server_url: str, template_db: str, tmp_path: Path, fake_provider: str
) -> None:
    name = f"llmo_w_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')  # type: ignore[arg-type]
    owner = make_conninfo(pg_server_url, dbname=name)
    orphaned = Server(make_conninfo(owner, user=APP_ROLE), owner, tmp_path, fake_provider)
    workers = [psutil.Process(pid) for pid in orphaned.live_runners().values()]
    try:
        assert len(workers) == 2
        # Nothing of the supervisor's own shutdown runs: its workers must notice by themselves.
        orphaned.process.send_signal(signal.SIGKILL)
        orphaned.process.wait(timeout=HANG)
        until(lambda: not any(_serving(worker) for worker in workers), "the workers to exit")
        assert orphaned.live_runners() == {}
    finally:
        for worker in workers:  # left only when the test fails (psutil spots a reused pid)
            if _serving(worker):
                worker.kill()
        orphaned.stop()
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def _serving(worker: psutil.Process) -> bool:
    try:
        return worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_more_workers_than_the_database_allows_connections_for_are_refused_at_start(
    module_database: tuple[str, str], tmp_path: Path
) -> None:
    owner_url, app_url = module_database
    with psycopg.connect(owner_url) as conn:
        allowed = conn.execute("SHOW max_connections").fetchone()
    assert allowed is not None
    workers = 64  # 64 x (10 + 1) connections: far beyond the test server's max_connections
    assert workers * 11 > int(allowed[0])
    refused = subprocess.run(
        [sys.executable, "-m", "llm_orchestrator.cli", "serve", "--port", str(free_port())]
        + ["--workers", str(workers)],
        cwd=ROOT,
        env=serve_env(
            LLMO_DATABASE_URL=app_url,
            LLMO_MIGRATION_DATABASE_URL=owner_url,
            LLMO_DATA_DIR=str(tmp_path),
            LLMO_ADMIN_USERNAME=ADMIN_USERNAME,
            LLMO_ADMIN_PASSWORD=ADMIN_PASSWORD,
            LLMO_JWT_SECRET=JWT_SECRET,
        ),
        capture_output=True,
        text=True,
        timeout=HANG,
    )
    assert refused.returncode == 2, refused.stderr
    assert f"{workers} workers need up to {workers * 11 + 5} database connections" in (
        refused.stderr
    )
    assert f"max_connections {allowed[0]}" in refused.stderr
    assert "listening" not in refused.stdout
