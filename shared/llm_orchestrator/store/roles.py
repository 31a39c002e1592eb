"""The application's database role, ``llmo_app``: what it may do, granted by the owner.

The owner (the role that runs migrations and owns every table) grants after every migration
run, so tables that later migrations create are covered too; ``ALTER DEFAULT PRIVILEGES``
covers tables the owner creates in between. The app role may read and write the ordinary
tables, only INSERT and SELECT ``audit_events`` (and only INSERT, SELECT and DELETE its outbox
``audit_pending``, whose events a linker moves into the chain, INSERT there only into the
event's columns and ``mac``, never ``position`` or ``legacy``; only INSERT and SELECT the
quarantine ``audit_pending_rejected``), only read
``schema_migrations``, and CREATE in the ``vectors`` schema (per-index tables made at run
time), when that schema exists.
"""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

APP_ROLE = "llmo_app"

_GRANTS = """
GRANT USAGE ON SCHEMA public TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {role};
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role};
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {role};
REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON audit_events FROM {role};
REVOKE INSERT, UPDATE, TRUNCATE, REFERENCES, TRIGGER ON audit_pending FROM {role};
GRANT INSERT (id, occurred_at, event_type, user_id, action, resource_type, resource_id, result,
    ip_address, details, mac) ON audit_pending TO {role};
REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON audit_pending_rejected FROM {role};
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON schema_migrations FROM {role};
"""

_VECTORS_GRANTS = """
GRANT USAGE, CREATE ON SCHEMA vectors TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA vectors TO {role};
ALTER DEFAULT PRIVILEGES IN SCHEMA vectors
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role};
"""


def grant_app_role(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    """Grant the app role its privileges; False (nothing done) when the role does not exist."""
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone()
    if exists is None:
        return False
    role = sql.Identifier(APP_ROLE)
    conn.execute(sql.SQL(_GRANTS).format(role=role))
    vectors = conn.execute("SELECT to_regnamespace('vectors') IS NOT NULL").fetchone()
    if vectors and vectors[0]:
        conn.execute(sql.SQL(_VECTORS_GRANTS).format(role=role))
    return True


def allow_app_login(owner_url: str) -> str:
    """For the embedded server (trust authentication over its socket): let the app role log
    in, and return the URL the app connects with."""
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} LOGIN").format(sql.Identifier(APP_ROLE)))
    return app_url(owner_url)


def app_url(owner_url: str) -> str:
    return make_conninfo(owner_url, user=APP_ROLE)


def user_of(url: str) -> str | None:
    return conninfo_to_dict(url).get("user")  # type: ignore[return-value]
