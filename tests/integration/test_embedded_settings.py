"""The embedded PostgreSQL starts with the configured ``shared_buffers``: from its very first
start (a new data directory), and with a changed value at its next start; and it still
stops when its last user lets go."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import psycopg
import pytest
from pydantic import ValidationError

from llm_orchestrator.config import Settings
from llm_orchestrator.store.embedded import (
    release_embedded_postgres,
    start_embedded_postgres,
    write_server_settings,
)


def _shared_buffers(url: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW shared_buffers").fetchone()
    assert row is not None
    return str(row[0])


def _running(pgdata: Path) -> bool:
    for process in psutil.process_iter(["name", "cmdline"]):
        if process.info["name"] == "postgres" and str(pgdata) in (process.info["cmdline"] or []):
            return True
    return False


def _wait_stopped(pgdata: Path) -> None:
    deadline = time.monotonic() + 30
    while _running(pgdata):
        assert time.monotonic() < deadline, "the embedded server is still running"
        time.sleep(0.2)


@pytest.mark.slow
def test_the_embedded_server_runs_with_the_configured_shared_buffers(
    embedded_data_dir: Path,
) -> None:
    pgdata = (embedded_data_dir / "pgdata").resolve()
    try:
        url = start_embedded_postgres(embedded_data_dir, shared_buffers="160MB")
        assert _shared_buffers(url) == "160MB"
        release_embedded_postgres(embedded_data_dir)
        _wait_stopped(pgdata)

        url = start_embedded_postgres(embedded_data_dir, shared_buffers="192MB")
        assert _shared_buffers(url) == "192MB"
    finally:
        release_embedded_postgres(embedded_data_dir)
    _wait_stopped(pgdata)


@pytest.mark.parametrize("value", ["lots", "512", "0MB", "512 MB", "1TB", "512MB; x"])
def test_a_shared_buffers_postgresql_would_not_read_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="embedded_shared_buffers"):
        Settings(embedded_shared_buffers=value)


def _cached_blocks(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_buffercache WHERE reldatabase ="
            " (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND relfilenode = pg_relation_filenode(%s)",
            (table,),
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.slow
def test_a_restarted_embedded_server_gets_its_buffer_pool_back(embedded_data_dir: Path) -> None:
    """The pages that were in ``shared_buffers`` when the server stopped are read back in
    the background at its next start (autoprewarm), before anyone reads them."""
    pgdata = (embedded_data_dir / "pgdata").resolve()
    try:
        url = start_embedded_postgres(embedded_data_dir, shared_buffers="160MB")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_buffercache")
            conn.execute(
                "CREATE TABLE warm AS SELECT n, repeat('x', 200) AS pad"
                " FROM generate_series(1, 20000) AS n"
            )
            row = conn.execute("SELECT pg_relation_size('warm') / 8192").fetchone()
        assert row is not None
        blocks = int(row[0])
        assert blocks > 100
        assert _cached_blocks(url, "warm") == blocks
        release_embedded_postgres(embedded_data_dir)
        _wait_stopped(pgdata)

        url = start_embedded_postgres(embedded_data_dir, shared_buffers="160MB")
        deadline = time.monotonic() + 60
        while (cached := _cached_blocks(url, "warm")) < blocks:
            assert time.monotonic() < deadline, f"{cached} of {blocks} blocks read back"
            time.sleep(0.2)
    finally:
        release_embedded_postgres(embedded_data_dir)
    _wait_stopped(pgdata)


def test_autoprewarm_is_configured_only_where_the_server_has_pg_prewarm(tmp_path: Path) -> None:
    """A server told to preload a library it lacks would not start at all."""
    pgdata = tmp_path / "pgdata"
    pgdata.mkdir()
    (pgdata / "postgresql.conf").write_text("max_connections = 100\n")
    without, with_prewarm = tmp_path / "lib-without", tmp_path / "lib"
    for folder, files in ((without, ["vector.so"]), (with_prewarm, ["vector.so", "pg_prewarm.so"])):
        folder.mkdir()
        for name in files:
            (folder / name).write_bytes(b"")

    write_server_settings(pgdata, shared_buffers="256MB", libraries=without)
    settings = (pgdata / "llmo.conf").read_text()
    assert "shared_buffers = '256MB'" in settings
    assert "pg_prewarm" not in settings

    write_server_settings(pgdata, shared_buffers="256MB", libraries=with_prewarm)
    settings = (pgdata / "llmo.conf").read_text()
    assert "shared_preload_libraries = 'pg_prewarm'" in settings
    assert "pg_prewarm.autoprewarm = on" in settings
    conf = (pgdata / "postgresql.conf").read_text().splitlines()
    assert conf.count("include_if_exists = 'llmo.conf'") == 1
