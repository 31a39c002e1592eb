"""`llmo serve` as a new user meets it: the bootstrap admin's generated password is printed
on the first start only, and works."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.integration.conftest import JWT_SECRET
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]


def _serve_once(env: dict[str, str]) -> str:
    """Start the server, wait until it answers, stop it; return what it printed."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "llm_orchestrator.cli", "serve", "--port", str(port)]
        + ["--log-level", "warning"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        # A deadline, not a wait: the loop ends as soon as the server answers. A first start
        # runs initdb for the embedded PostgreSQL, which takes far longer than 30 s on a
        # loaded 2-core machine (and longer again under `make coverage`).
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert process.poll() is None, "the server exited during start-up"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/v1/health/live").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise AssertionError("the server did not start")
        env["LLMO_TEST_PORT"] = str(port)
        login = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/auth/login",
            json={"username": "admin", "password": env.get("EXPECTED_PASSWORD", "")},
        )
        env["LAST_LOGIN_STATUS"] = str(login.status_code)
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=15)
    return out


def test_first_start_prints_a_working_admin_password_once(database_url: str, tmp_path: Path):
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LLMO_")},
        "LLMO_DATABASE_URL": database_url,
        "LLMO_DATA_DIR": str(tmp_path),
        "LLMO_JWT_SECRET": JWT_SECRET,
    }

    first = _serve_once(env)
    line = next(line for line in first.splitlines() if "with password:" in line)
    env["EXPECTED_PASSWORD"] = line.rsplit(": ", 1)[1].strip()
    second = _serve_once(env)

    assert "Created admin user 'admin'" in first
    assert "with password:" not in second
    assert env["LAST_LOGIN_STATUS"] == "200"
    assert "listening on http://127.0.0.1:" in second


def test_stopping_serve_stops_its_embedded_postgres(tmp_path: Path) -> None:
    import psutil

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LLMO_")},
        "LLMO_DATA_DIR": str(tmp_path),
        "LLMO_ADMIN_PASSWORD": "embedded-admin-password",
    }
    pgdata = str(tmp_path / "pgdata")

    def embedded_servers() -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter(["name", "cmdline"]):
            cmdline = process.info["cmdline"] or []
            if process.info["name"] == "postgres" and pgdata in cmdline:
                found.append(process)
        return found

    _serve_once(env)  # SIGTERM, as Ctrl-C or a service manager would stop it

    deadline = time.monotonic() + 10
    while embedded_servers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert embedded_servers() == []
