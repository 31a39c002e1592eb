"""Plain SQL migrations, applied in file-name order and recorded in ``schema_migrations``.

An advisory lock makes concurrent starters (several Lambdas, a server and a CLI) safe.
"""

from __future__ import annotations

from importlib import resources

import psycopg

from llm_orchestrator.store.roles import grant_app_role

_LOCK_ID = 7_412_003_001


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("llm_orchestrator.store") / "migrations"
    files = sorted(
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )
    return files


# The owner of the migrations table (or, before there is one, a role that may create it):
# superusers and members of the owning role count, the app role does not.
_IS_OWNER = """
SELECT CASE WHEN to_regclass('schema_migrations') IS NULL
            THEN has_schema_privilege('public', 'CREATE')
            ELSE pg_has_role(
                (SELECT relowner FROM pg_class WHERE oid = to_regclass('schema_migrations')),
                'USAGE')
       END
"""


def _pending(conn: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    table = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
    done: set[str] = set()
    if table is not None and table[0] is not None:
        done = {str(row[0]) for row in conn.execute("SELECT name FROM schema_migrations")}
    return [name for name, _ in migration_files() if name not in done]


def apply_migrations(url: str) -> list[str]:
    """Apply every pending migration and grant the app role its privileges (as the owner);
    returns the names applied now.

    Connected as a role that may not create tables (the app role, ``llmo_app``), it only
    checks that nothing is pending, and refuses to start otherwise.
    """
    applied_now: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        owner = conn.execute(_IS_OWNER).fetchone()
        if not (owner and owner[0]):
            pending = _pending(conn)
            if pending:
                raise RuntimeError(
                    f"{len(pending)} database migrations are pending ({pending[0]} first) and"
                    " this role may not apply them: run `llmo migrate` with the owner's URL in"
                    " LLMO_MIGRATION_DATABASE_URL"
                )
            return []
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
            with conn.transaction():
                grant_app_role(conn)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied_now
