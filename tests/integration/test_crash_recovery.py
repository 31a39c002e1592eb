"""A server killed with SIGKILL mid-execution finishes every execution after a restart,
without calling any step again whose outputs were committed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.integration.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, JWT_SECRET
from tests.integration.execution_support import llm_step
from tests.integration.serve_support import ROOT, ServeProcess, serve_env

FAKE_KEY = "sk-crash-test"
EXECUTIONS = 6
# Deadlines against a hang, not a speed test: a fresh server's first executions import the
# engine and the provider SDK while running steps, and at load 14 on two cores one of the
# six submits took over 10 s (a stress run of the suite).
HANG = 60.0


@pytest.fixture
def fake_provider_url() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--port", "0"]
        + ["--latency", "0.25", "--api-key", FAKE_KEY],
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


@pytest.fixture
def server_process(
    database_url: str, data_dir: Path, fake_provider_url: str
) -> Iterator[ServeProcess]:
    env = serve_env(
        LLMO_DATABASE_URL=database_url,
        LLMO_DATA_DIR=str(data_dir),
        LLMO_ADMIN_USERNAME=ADMIN_USERNAME,
        LLMO_ADMIN_PASSWORD=ADMIN_PASSWORD,
        LLMO_JWT_SECRET=JWT_SECRET,
        LLMO_RATE_LIMITS_ENABLED="false",
        OPENAI_BASE_URL=fake_provider_url,
        OPENAI_API_KEY=FAKE_KEY,
    )
    server = ServeProcess(env)
    try:
        yield server
    finally:
        server.stop()


def _committed_steps(database_url: str) -> set[tuple[str, str]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT execution_id, step_id FROM step_runs WHERE status = 'completed'"
        ).fetchall()
    return {(row[0], row[1]) for row in rows}


async def _statuses(http: httpx.AsyncClient, workflow_id: str, ids: list[str]) -> list[Any]:
    bodies = []
    for execution_id in ids:
        response = await http.get(
            f"/workflows/{workflow_id}/status", params={"executionId": execution_id}
        )
        assert response.status_code == 200, response.text
        bodies.append(response.json())
    return bodies


async def test_sigkilled_server_resumes_every_execution_without_repeating_steps(
    server_process: ServeProcess, database_url: str, fake_provider_url: str
) -> None:
    server_process.start()
    async with httpx.AsyncClient(base_url=server_process.base_url, timeout=HANG) as http:
        login = await http.post(
            "/auth/login", json={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
        )
        http.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        steps = [
            llm_step("a", "a {{x}}", "out_a"),
            llm_step("b", "b {{out_a}}", "out_b", depends_on=["a"]),
            llm_step("c", "c {{out_b}}", "out_c", depends_on=["b"]),
        ]
        created = await http.post("/workflows", json={"name": "crash", "steps": steps})
        workflow_id = created.json()["id"]
        ids = []
        for n in range(EXECUTIONS):
            response = await http.post(
                f"/workflows/{workflow_id}/execute", json={"inputs": {"x": f"run{n}"}}
            )
            assert response.status_code == 202, response.text
            ids.append(response.json()["execution_id"])
        # Kill once some steps are committed and none of the executions is finished.
        deadline = time.monotonic() + HANG
        while len(_committed_steps(database_url)) < EXECUTIONS:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)

    server_process.kill()
    committed = _committed_steps(database_url)
    assert len(committed) < EXECUTIONS * 3, "everything finished before the kill"

    server_process.start()
    async with httpx.AsyncClient(base_url=server_process.base_url, timeout=HANG) as http:
        login = await http.post(
            "/auth/login", json={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
        )
        http.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
        deadline = time.monotonic() + HANG
        while True:
            bodies = await _statuses(http, workflow_id, ids)
            if all(body["status"] == "completed" for body in bodies):
                break
            assert time.monotonic() < deadline, [b["status"] for b in bodies]
            await asyncio.sleep(0.1)
        log = httpx.get(fake_provider_url.removesuffix("/v1") + "/_fake/requests").json()

    for n, body in enumerate(bodies):
        assert body["context"]["outputs"]["out_c"] == f"echo: c echo: b echo: a run{n}"
    calls = Counter(
        message["content"]
        for request in log
        if request["path"] == "/v1/chat/completions" and request["status"] == 200
        for message in request["body"]["messages"]
    )
    prompt_of = {"a": "a {x}", "b": "b echo: a {x}", "c": "c echo: b echo: a {x}"}
    for execution_id, step_id in committed:
        x = bodies[ids.index(execution_id)]["context"]["inputs"]["x"]
        assert calls[prompt_of[step_id].format(x=x)] == 1, (execution_id, step_id)
