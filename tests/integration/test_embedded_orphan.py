"""Whoever adopts a running embedded PostgreSQL owns its shutdown: ``llmo serve``, kill -9,
``llmo serve`` again (it adopts the server the dead one left running), SIGTERM: the
database stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _start(env: dict[str, str]) -> subprocess.Popen[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "llm_orchestrator.cli", "serve", "--port", str(port)]
        + ["--log-level", "warning"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited during start-up"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health").status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError("the server did not start")


def test_the_adopter_of_an_orphaned_embedded_postgres_stops_it(tmp_path: Path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LLMO_")},
        "LLMO_DATA_DIR": str(tmp_path),
        "LLMO_ADMIN_PASSWORD": "embedded-admin-password",
    }
    pgdata = str(tmp_path / "pgdata")

    def embedded_servers() -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter(["name", "cmdline"]):
            if process.info["name"] == "postgres" and pgdata in (process.info["cmdline"] or []):
                found.append(process)
        return found

    first = _start(env)
    try:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        orphaned = embedded_servers()
        assert orphaned, "the database should outlive a kill -9 of its server"

        second = _start(env)
        assert [p.pid for p in embedded_servers()] == [p.pid for p in orphaned]  # adopted
        second.terminate()
        second.wait(timeout=30)

        deadline = time.monotonic() + 15
        while embedded_servers() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert embedded_servers() == []
    finally:
        for process in embedded_servers():
            process.kill()
