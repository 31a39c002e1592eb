"""Plain SQL migrations, applied in file-name order and recorded in ``schema_migrations``.

An advisory lock makes concurrent starters (several Lambdas, a server and a CLI) safe.
"""

from __future__ import annotations

from importlib import resources

import psycopg

_LOCK_ID = 7_412_003_001


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("llm_orchestrator.store") / "migrations"
    files = sorted(
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )
    return files


def apply_migrations(url: str) -> list[str]:
    """Apply every pending migration; returns the names applied now."""
    applied_now: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
            for name, sql in migration_files():
                if name in done:
                    continue
                with conn.transaction():
                    conn.execute(sql.encode())  # trusted, packaged SQL
                    conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
                applied_now.append(name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied_now
