"""`llmo serve` as a new user meets it: the bootstrap admin's generated password is printed
on the first start only, and works. (Its embedded PostgreSQL: ``test_embedded_orphan.py``.)"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import ADMIN_PASSWORD, JWT_SECRET, fake_environ
from tests.integration.execution_support import llm_step, wait_held
from tests.integration.serve_support import ServeProcess, serve_env


def _env(database_url: str, tmp_path: Path, fake: FakeOpenAI, **extra: str) -> dict[str, str]:
    """A server on the test database with a known admin password, calling ``fake``."""
    return serve_env(
        LLMO_DATABASE_URL=database_url,
        LLMO_DATA_DIR=str(tmp_path),
        LLMO_JWT_SECRET=JWT_SECRET,
        LLMO_ADMIN_PASSWORD=ADMIN_PASSWORD,
        **fake_environ(fake),
        **extra,
    )


def _admin(server: ServeProcess) -> httpx.Client:
    """A client of ``server`` logged in as the admin."""
    api = httpx.Client(base_url=server.base_url, timeout=60)
    login = api.post("/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
    api.headers["Authorization"] = f"Bearer {login.json()['access_token']}"
    return api


def test_first_start_prints_a_working_admin_password_once(database_url: str, tmp_path: Path):
    env = serve_env(
        LLMO_DATABASE_URL=database_url, LLMO_DATA_DIR=str(tmp_path), LLMO_JWT_SECRET=JWT_SECRET
    )

    first = ServeProcess(env, capture=True).start()
    first_output = first.stop()
    line = next(line for line in first_output.splitlines() if "with password:" in line)
    password = line.rsplit(": ", 1)[1].strip()
    second = ServeProcess(env, capture=True).start()
    try:
        login = httpx.post(
            f"{second.base_url}/auth/login",
            json={"username": "admin", "password": password},
            timeout=60,  # an argon2 verification, slow on a loaded machine
        )
    finally:
        second_output = second.stop()

    assert "Created admin user 'admin'" in first_output
    assert "with password:" not in second_output
    assert login.status_code == 200, login.text
    assert f"listening on http://127.0.0.1:{second.port}" in second_output


def test_a_stop_cuts_off_a_request_still_waiting_once_the_grace_is_over(
    database_url: str, tmp_path: Path, fake_openai: FakeOpenAI
):
    env = _env(database_url, tmp_path, fake_openai, LLMO_SHUTDOWN_GRACE_SECONDS="1")
    fake_openai.hold()  # the step's provider call never answers: `async: false` waits on
    server = ServeProcess(env).start()
    assert server.process is not None
    try:
        api = _admin(server)
        created = api.post("/workflows", json={"name": "held", "steps": [llm_step("s", "hi", "r")]})
        execute = f"/workflows/{created.json()['id']}/execute"
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(api.post, execute, json={"async": False, "inputs": {}})
            asyncio.run(wait_held(fake_openai))
            server.process.terminate()
            # Without a bound the server waits for that request as long as the call is held.
            exit_code = server.process.wait(timeout=60)
            with contextlib.suppress(httpx.TransportError):
                waiting.result(timeout=60)  # cut off: it ends, with or without an answer
    finally:
        fake_openai.release()
        server.stop()

    # uvicorn ends by re-raising the signal it stopped for, as an unhandled SIGTERM would.
    assert exit_code in (0, -signal.SIGTERM)


def test_log_level_warning_keeps_info_lines_of_every_logger_out(
    database_url: str, tmp_path: Path, fake_openai: FakeOpenAI
):
    server = ServeProcess(_env(database_url, tmp_path, fake_openai), capture=True).start()
    try:
        api = _admin(server)
        created = api.post(
            "/workflows", json={"name": "quiet", "steps": [llm_step("s", "hi", "r")]}
        )
        done = api.post(
            f"/workflows/{created.json()['id']}/execute", json={"async": False, "inputs": {}}
        )
    finally:
        output = server.stop()

    assert done.json()["status"] == "completed", done.text
    assert fake_openai.requests_to("/v1/chat/completions")
    # The HTTP client's INFO line per provider call ("HTTP Request: POST ...") among them;
    # the audit anchors are records, written whatever the level.
    info = [line for line in output.splitlines() if line.startswith("INFO")]
    assert [
        line for line in info if not line.startswith("INFO llm_orchestrator.audit.anchor: ")
    ] == [], output
    assert any(" audit-anchor {" in line for line in info), output
