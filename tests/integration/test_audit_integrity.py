"""An audit trail that someone holding the database's credentials cannot rewrite unseen.

The app connects as ``llmo_app``, which owns nothing and may only INSERT and SELECT audit
events; each event's hash is an HMAC under a key kept outside the database; the chain's head
is anchored outside the database, and ``/audit/verify`` checks against the latest anchor.
"""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from llm_orchestrator.audit.trail import _hashed_fields, chain_hash, legacy_chain_hash
from llm_orchestrator.store.audit import AuditRecord
from llm_orchestrator.store.migrate import apply_migrations
from llm_orchestrator.store.roles import APP_ROLE


def _rows(owner_url: str) -> list[dict[str, Any]]:
    with psycopg.connect(owner_url, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM audit_events ORDER BY seq").fetchall()


async def _verify(client, admin) -> dict[str, Any]:
    response = await client.get("/audit/verify", headers=admin.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_the_app_role_owns_nothing_and_may_not_touch_the_trail(database_url, owner_database_url):
    with psycopg.connect(database_url, autocommit=True) as app:
        assert app.execute("SELECT current_user").fetchone() == (APP_ROLE,)
        owned = app.execute(
            "SELECT count(*) FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles"
            " WHERE rolname = current_user)"
        ).fetchone()
        assert owned == (0,)
        app.execute("SELECT count(*) FROM audit_events")  # reading is allowed
        for statement in (
            "UPDATE audit_events SET action = 'x'",
            "DELETE FROM audit_events",
            "TRUNCATE audit_events",
            "ALTER TABLE audit_events DISABLE TRIGGER ALL",
            "SET session_replication_role = replica",
            "DROP TABLE audit_events",
            "INSERT INTO schema_migrations (name) VALUES ('9999_forged.sql')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                app.execute(statement)


def test_tables_of_later_migrations_and_the_vectors_schema_are_usable_by_the_app(
    database_url, owner_database_url
):
    with psycopg.connect(owner_database_url, autocommit=True) as owner:
        owner.execute("CREATE TABLE later_feature (id serial PRIMARY KEY, note text)")
        owner.execute("CREATE SCHEMA IF NOT EXISTS vectors")
    apply_migrations(owner_database_url)  # every migration run repeats the grants

    with psycopg.connect(database_url, autocommit=True) as app:
        app.execute("INSERT INTO later_feature (note) VALUES ('ok')")
        assert app.execute("SELECT note FROM later_feature").fetchall() == [("ok",)]
        app.execute("CREATE TABLE vectors.idx_demo (id text PRIMARY KEY)")
        app.execute("INSERT INTO vectors.idx_demo VALUES ('a')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("CREATE TABLE public.sneaky (id int)")


async def test_a_superuser_rewrite_of_the_chain_is_named_by_verify(
    client, admin, create_user, owner_database_url
):
    """Exactly the attack of the report: replica mode, change a row, recompute every later
    hash with the app's own function, move the chain head. Without the key the attacker can
    only guess one (or fall back to the keyless function), and verify names the event."""
    await create_user("someone")
    await create_user("someone-else")
    assert (await _verify(client, admin))["valid"] is True
    rows = _rows(owner_database_url)
    victim = rows[1]

    for forge in (
        lambda prev, fields: chain_hash(secrets.token_bytes(32), prev, fields),
        legacy_chain_hash,
    ):
        with psycopg.connect(owner_database_url, row_factory=dict_row) as conn:
            conn.execute("SET session_replication_role = replica")
            conn.execute(
                "UPDATE audit_events SET result = 'failure', details = details || %s WHERE id = %s",
                (json.dumps({"note": "rewritten"}), victim["id"]),
            )
            chain = conn.execute("SELECT * FROM audit_events ORDER BY seq").fetchall()
            prev = chain[0]["event_hash"]
            for row in chain[1:]:
                record = AuditRecord(**{k: row[k] for k in AuditRecord.__dataclass_fields__})
                forged = forge(prev, _hashed_fields(record))
                conn.execute(
                    "UPDATE audit_events SET prev_hash = %s, event_hash = %s WHERE seq = %s",
                    (prev, forged, row["seq"]),
                )
                prev = forged
            conn.execute("UPDATE audit_chain_head SET last_hash = %s", (prev,))
            conn.commit()

        verification = await _verify(client, admin)

        assert verification["valid"] is False
        assert verification["first_invalid_event_id"] == victim["id"]


async def test_cutting_the_chain_back_is_caught_by_the_anchor(
    client, admin, create_user, owner_database_url, caplog
):
    caplog.set_level(logging.INFO, logger="llm_orchestrator.audit.anchor")
    await create_user("first")
    anchored = await client.post("/audit/anchor", headers=admin.headers)
    assert anchored.status_code == 200
    anchor = anchored.json()
    assert anchor["signature"].startswith("hmac-sha256:")
    assert any(
        "audit-anchor" in r.getMessage() and anchor["event_hash"] in r.getMessage()
        for r in caplog.records
    )
    assert (await _verify(client, admin))["anchor"]["seq"] == anchor["seq"]

    # Remove the newest events and move the head back to an earlier, perfectly valid link:
    # every remaining HMAC still checks out.
    with psycopg.connect(owner_database_url, row_factory=dict_row) as conn:
        conn.execute("SET session_replication_role = replica")
        keep = anchor["seq"] - 2
        last = conn.execute("SELECT event_hash FROM audit_events WHERE seq = %s", (keep,))
        last_hash = last.fetchone()["event_hash"]
        conn.execute("DELETE FROM audit_events WHERE seq > %s", (keep,))
        conn.execute("UPDATE audit_chain_head SET seq = %s, last_hash = %s", (keep, last_hash))
        conn.commit()

    verification = await _verify(client, admin)

    assert verification["valid"] is False
    assert verification["first_invalid_event_id"] is None
    assert "anchor" in verification["reason"]


async def test_a_forged_anchor_is_refused(client, admin, server):
    await client.post("/audit/anchor", headers=admin.headers)
    anchors = server.runtime.settings.data_dir / "audit-anchors.jsonl"
    forged = json.loads(anchors.read_text().splitlines()[-1])
    forged.update(seq=forged["seq"] + 1000, event_hash="hmac-sha256:" + "0" * 64)
    with anchors.open("a") as handle:
        handle.write(json.dumps(forged) + "\n")

    verification = await _verify(client, admin)

    assert verification["valid"] is False
    assert "signature" in verification["reason"]


async def test_events_are_hmac_linked_under_a_key_outside_the_database(
    client, admin, server, owner_database_url
):
    key_file = server.runtime.settings.data_dir / "audit-hmac.key"
    rows = _rows(owner_database_url)
    assert rows and all(r["event_hash"].startswith("hmac-sha256:") for r in rows)
    key = key_file.read_text().strip()
    with psycopg.connect(owner_database_url) as conn:
        dump = conn.execute("SELECT string_agg(t::text, ' ') FROM audit_events t").fetchone()
    assert key not in (dump[0] or "")
