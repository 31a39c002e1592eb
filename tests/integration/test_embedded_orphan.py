"""``llmo serve`` without a database URL runs an embedded PostgreSQL, and whoever runs it
owns its shutdown: SIGTERM stops it; after kill -9 it outlives the server, the next
``llmo serve`` adopts it, and that one's SIGTERM stops it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.serve_support import ServeProcess, embedded_servers, serve_env, wait_gone

pytestmark = pytest.mark.slow


def test_stopping_serve_stops_its_embedded_postgres_even_one_it_adopted(
    embedded_data_dir: Path,
) -> None:
    env = serve_env(
        LLMO_DATA_DIR=str(embedded_data_dir), LLMO_ADMIN_PASSWORD="embedded-admin-password"
    )
    pgdata = embedded_data_dir / "pgdata"
    try:
        first = ServeProcess(env).start()  # initdb, then the database starts
        assert embedded_servers(pgdata), "serve runs its database on the data directory"
        first.stop()
        assert wait_gone(pgdata) == [], "SIGTERM stops the database serve started"

        second = ServeProcess(env).start()
        second.kill()
        orphaned = embedded_servers(pgdata)
        assert orphaned, "the database should outlive a kill -9 of its server"

        third = ServeProcess(env).start()
        assert [p.pid for p in embedded_servers(pgdata)] == [p.pid for p in orphaned]  # adopted
        third.stop()
        assert wait_gone(pgdata) == [], "the adopter's SIGTERM stops the database too"
    finally:
        for process in embedded_servers(pgdata):
            process.kill()
