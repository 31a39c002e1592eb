"""``llmo serve`` in a child process, as a user starts it: the crash-recovery, first-start
and embedded-PostgreSQL tests share it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]


def serve_env(**settings: str) -> dict[str, str]:
    """This process's environment without any ``LLMO_*`` variable, plus ``settings``."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("LLMO_")}
    return {**inherited, **settings}


class ServeProcess:
    """``llmo serve --port <free port> --log-level warning``; what it prints (stdout and
    stderr) is kept when ``capture`` is set."""

    def __init__(self, env: dict[str, str], *, capture: bool = False) -> None:
        self.env = env
        self.port = free_port()
        self.capture = capture
        self.process: subprocess.Popen[str] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def start(self) -> ServeProcess:
        """Returns once ``/health/live`` answers."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llm_orchestrator.cli", "serve", "--port", str(self.port)]
            + ["--log-level", "warning"],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE if self.capture else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if self.capture else subprocess.DEVNULL,
            text=True,
        )
        # A deadline, not a wait: the loop ends as soon as the server answers. A first start
        # runs initdb for the embedded PostgreSQL, which takes far longer than 30 s on a
        # loaded 2-core machine (and longer again under `make coverage`).
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError("the server exited during start-up")
            try:
                if httpx.get(f"{self.base_url}/health/live", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.process.kill()
        raise AssertionError("the server did not start")

    def kill(self) -> None:
        """SIGKILL: nothing of the server's own shutdown runs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> str:
        """SIGTERM, as Ctrl-C or a service manager would stop it; returns what it printed."""
        if self.process is None or self.process.poll() is not None:
            return ""
        self.process.terminate()
        out, _ = self.process.communicate(timeout=30)
        return out or ""


def embedded_servers(pgdata: Path) -> list[psutil.Process]:
    """The PostgreSQL processes running on the data directory ``pgdata``."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "postgres" and str(pgdata) in (process.info["cmdline"] or []):
            found.append(process)
    return found


def wait_gone(pgdata: Path, timeout: float = 15.0) -> list[psutil.Process]:
    """Until no PostgreSQL runs on ``pgdata`` (or ``timeout``); returns those still there."""
    deadline = time.monotonic() + timeout
    while (left := embedded_servers(pgdata)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@contextmanager
def threaded_server(app: Any, **config: Any) -> Iterator[int]:
    """``app`` behind uvicorn, on a thread of this process, with the HTTP protocol ``llmo
    serve`` uses (and ``config``); yields its port once it listens, stops it afterwards."""
    import uvicorn

    from llm_orchestrator.api.http_protocol import EnvelopeH11Protocol

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            http=EnvelopeH11Protocol,
            log_level="warning",
            **config,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)
