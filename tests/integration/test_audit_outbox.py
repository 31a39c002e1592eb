"""The audit trail's outbox: writers commit their events without waiting for one another,
the events are linked into one unbroken chain, and a reader never sees a gap."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from llm_orchestrator import ids
from llm_orchestrator.audit.anchors import LogAnchorStore
from llm_orchestrator.audit.trail import (
    AuditTrail,
    canonical_json,
    chain_hash,
    link_hash,
    pending_mac,
    pending_mac_of,
)
from llm_orchestrator.clock import utcnow
from llm_orchestrator.config import Settings
from llm_orchestrator.runtime import resolve_audit_key
from llm_orchestrator.store.audit import AuditRepository, Sealer
from llm_orchestrator.store.db import Database
from llm_orchestrator.store.migrate import apply_migrations
from tests.integration.conftest import serving


@asynccontextmanager
async def another_process(server: Any) -> AsyncIterator[tuple[AuditTrail, Database]]:
    """A second writer as another process (a Lambda container) would be: its own pool and
    trail on the same database and key, and no linker task."""
    runtime = server.runtime
    db = Database(runtime.db.url, max_size=4)
    trail = AuditTrail(
        AuditRepository(db),
        utcnow,
        key_source=resolve_audit_key(runtime.settings, runtime.secrets),
        anchors=LogAnchorStore(None),
    )
    try:
        yield trail, db
    finally:
        await db.close()


@asynccontextmanager
async def head_held(owner_url: str) -> AsyncIterator[None]:
    """The chain's head locked by someone who then dies without linking anything: what is
    written meanwhile goes to the outbox."""
    async with await psycopg.AsyncConnection.connect(owner_url) as holder:
        await holder.execute("SELECT 1 FROM audit_chain_head FOR UPDATE")  # a transaction
        yield
        await holder.rollback()


def _owner_rows(owner_url: str, query: str) -> list[dict[str, Any]]:
    with psycopg.connect(owner_url, row_factory=dict_row) as conn:
        return conn.execute(query).fetchall()  # type: ignore[arg-type]


async def _events(client: Any, admin: Any, **params: Any) -> dict[str, Any]:
    response = await client.get("/audit/events", headers=admin.headers, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _verify(client: Any, admin: Any) -> dict[str, Any]:
    response = await client.get("/audit/verify", headers=admin.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_writers_in_several_processes_leave_one_chain_with_every_event_once(
    client, admin, server, owner_database_url
):
    """Four processes write at once, alone and inside transactions; when the last write has
    returned (before any read), nothing is left unlinked, and the chain holds each event
    exactly once, unbroken."""
    async with (
        another_process(server) as (a, a_db),
        another_process(server) as (b, b_db),
        another_process(server) as (c, c_db),
        another_process(server) as (d, d_db),
    ):

        async def alone(trail: AuditTrail, name: str) -> None:
            await trail.record(event_type="test", action=name)

        async def in_transaction(trail: AuditTrail, db: Database, name: str) -> None:
            async with db.transaction(pipelined=True) as conn:
                await trail.record(event_type="test", action=name, conn=conn)
            await trail.link_pending()

        writes = []
        for p, (trail, db) in enumerate(((a, a_db), (b, b_db), (c, c_db), (d, d_db))):
            for i in range(25):
                name = f"p{p} w{i}"
                writes.append(alone(trail, name) if i % 2 else in_transaction(trail, db, name))
        await asyncio.gather(*writes)

    assert _owner_rows(owner_database_url, "SELECT * FROM audit_pending") == []
    linked = _owner_rows(
        owner_database_url,
        "SELECT action, count(*) AS n FROM audit_events WHERE event_type = 'test' GROUP BY 1",
    )
    assert sorted(r["action"] for r in linked) == sorted(
        f"p{p} w{i}" for p in range(4) for i in range(25)
    )
    assert {r["n"] for r in linked} == {1}
    verification = await _verify(client, admin)
    assert verification["valid"] is True
    seqs = [r["seq"] for r in _owner_rows(owner_database_url, "SELECT seq FROM audit_events")]
    assert sorted(seqs) == list(range(1, verification["checked"] + 1))


async def test_a_writer_that_finds_the_head_taken_is_linked_by_its_holder(
    client, admin, server, owner_database_url
):
    """A linker holds the head (stopped, in another thread, in the middle of its batch); a
    writer commits, finds the head taken and returns at once. The holder, once it lets the
    head go, looks at the outbox again and links that event: nothing is left behind."""
    runtime = server.runtime
    key = await resolve_audit_key(runtime.settings, runtime.secrets)()
    async with another_process(server) as (trail, db), head_held(owner_database_url):
        async with db.transaction(pipelined=True) as conn:
            await trail.record(event_type="test", action="before", conn=conn)
    holding, go = threading.Event(), threading.Event()

    def held_link(prev: str, canonical: str) -> str:
        holding.set()
        assert go.wait(60), "the test never let the linker go on"
        return link_hash(key, prev, canonical)

    def refuse(row: dict[str, Any], reason: str) -> dict[str, Any]:
        raise AssertionError(f"pending row {row['position']} refused: {reason}")

    sealer = Sealer(canonical_json, held_link, partial(pending_mac_of, key), refuse)

    async def link_in_another_process() -> int:
        db = Database(runtime.db.url, max_size=1)
        try:
            return (await AuditRepository(db).link(sealer, wait=False)).linked
        finally:
            await db.close()

    linker = threading.Thread(target=lambda: linked.append(asyncio.run(link_in_another_process())))
    linked: list[int] = []
    linker.start()
    try:
        assert await asyncio.to_thread(holding.wait, 60)
        await runtime.audit.record(event_type="test", action="while held")
        pending = _owner_rows(owner_database_url, "SELECT action FROM audit_pending")
        assert [p["action"] for p in pending] == ["before", "while held"]
    finally:
        go.set()
        await asyncio.to_thread(linker.join, 60)

    assert linked == [2]
    assert _owner_rows(owner_database_url, "SELECT * FROM audit_pending") == []
    assert (await _verify(client, admin))["valid"] is True


async def test_an_event_whose_transaction_rolls_back_never_appears(
    client, admin, server, owner_database_url
):
    runtime = server.runtime
    with pytest.raises(RuntimeError):
        async with runtime.db.transaction(pipelined=True) as conn:
            await runtime.audit.record(event_type="test", action="rolled back", conn=conn)
            await conn.execute("SELECT 1")  # the event has reached the server
            raise RuntimeError("the caller's write failed")
    await runtime.audit.record(event_type="test", action="committed")

    listed = await _events(client, admin, event_type="test")

    assert [e["action"] for e in listed["events"]] == ["committed"]
    assert _owner_rows(owner_database_url, "SELECT * FROM audit_pending") == []
    assert (await _verify(client, admin))["valid"] is True


async def test_an_event_committed_but_never_linked_is_linked_by_the_next_reader(
    client, admin, server, owner_database_url
):
    """Its writer committed it and died before linking it: the next read links it first."""
    checked_before = (await _verify(client, admin))["checked"]
    async with another_process(server) as (trail, db), head_held(owner_database_url):
        for action in ("orphan one", "orphan two"):
            async with db.transaction(pipelined=True) as conn:
                await trail.record(event_type="test", action=action, conn=conn)
        # ... and no link_pending(): the writer is gone.
    pending = _owner_rows(owner_database_url, "SELECT id, action FROM audit_pending")
    assert [p["action"] for p in pending] == ["orphan one", "orphan two"]

    one = await client.get(f"/audit/events/{pending[0]['id']}", headers=admin.headers)

    assert one.status_code == 200, one.text
    assert one.json()["action"] == "orphan one"
    assert one.json()["event_hash"].startswith("hmac-sha256:")
    assert _owner_rows(owner_database_url, "SELECT * FROM audit_pending") == []
    verification = await _verify(client, admin)
    assert verification["valid"] is True
    assert verification["checked"] == checked_before + 2


async def test_a_read_sees_every_event_written_before_it(client, admin, server):
    """Twenty writers in another process commit without linking and at once read the trail,
    while the others write: each finds its own event, and the chain stays unbroken."""
    async with another_process(server) as (trail, db):

        async def write_then_read(i: int) -> None:
            async with db.transaction(pipelined=True) as conn:
                await trail.record(
                    event_type="test", action="write", resource_id=f"r{i}", conn=conn
                )
            found = await _events(client, admin, resource_id=f"r{i}")
            assert [e["resource_id"] for e in found["events"]] == [f"r{i}"]
            total = (await _events(client, admin, event_type="test", limit=1))["total"]
            assert total >= 1

        await asyncio.gather(*(write_then_read(i) for i in range(20)))

    assert (await _events(client, admin, event_type="test", limit=100))["total"] == 20
    verification = await _verify(client, admin)
    assert verification["valid"] is True


OUTBOX_MIGRATION = "0070_audit_outbox.sql"
MAC_MIGRATION = "0071_audit_pending_mac.sql"


def _undo_migrations(owner_url: str, *, outbox: bool) -> None:
    """The database as it was before the pending events' MAC (0071), and with ``outbox``
    before the outbox itself (0070)."""
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute("DROP TABLE audit_pending_rejected")
        conn.execute("ALTER TABLE audit_pending DROP COLUMN mac, DROP COLUMN legacy")
        conn.execute("DELETE FROM schema_migrations WHERE name = %s", (MAC_MIGRATION,))
        if outbox:
            conn.execute("DROP TABLE audit_pending")
            conn.execute("DELETE FROM schema_migrations WHERE name = %s", (OUTBOX_MIGRATION,))


def _write_old_chain(owner_url: str, key: bytes, count: int) -> list[dict[str, Any]]:
    """Events as the appends before the outbox wrote them: the head locked, the link
    computed, the event and the new head written in one transaction."""
    with psycopg.connect(owner_url, row_factory=dict_row) as conn:
        for i in range(count):
            with conn.transaction():
                head = conn.execute(
                    "SELECT seq, last_hash FROM audit_chain_head WHERE singleton FOR UPDATE"
                ).fetchone()
                assert head is not None
                fields: dict[str, Any] = {
                    "event_type": "test",
                    "user_id": None,
                    "action": f"old {i}",
                    "resource_type": None,
                    "resource_id": None,
                    "result": "success",
                    "ip_address": "203.0.113.9",
                    "details": json.loads(canonical_json({"n": i, "nested": {"b": 1, "a": 2}})),
                    "id": ids.event_id(),
                    "occurred_at": datetime.now(UTC),
                }
                event_hash = chain_hash(key, head["last_hash"], fields)
                conn.execute(
                    "INSERT INTO audit_events (seq, id, occurred_at, event_type, user_id,"
                    " action, resource_type, resource_id, result, ip_address, details,"
                    " prev_hash, event_hash) VALUES (%(seq)s, %(id)s, %(occurred_at)s,"
                    " %(event_type)s, %(user_id)s, %(action)s, %(resource_type)s,"
                    " %(resource_id)s, %(result)s, %(ip_address)s, %(details)s, %(prev)s,"
                    " %(hash)s)",
                    {
                        **fields,
                        "details": Jsonb(fields["details"]),
                        "seq": head["seq"] + 1,
                        "prev": head["last_hash"],
                        "hash": event_hash,
                    },
                )
                conn.execute(
                    "UPDATE audit_chain_head SET seq = %s, last_hash = %s",
                    (head["seq"] + 1, event_hash),
                )
        return conn.execute("SELECT * FROM audit_events ORDER BY seq").fetchall()


async def test_a_chain_written_before_the_outbox_still_verifies_after_the_migration(
    owner_database_url: str, settings: Settings, data_dir: Path
):
    key = "k" * 48
    (data_dir / "audit-hmac.key").write_text(key)
    # The database as it was before migration 0070.
    _undo_migrations(owner_database_url, outbox=True)
    old = _write_old_chain(owner_database_url, key.encode(), 5)

    assert apply_migrations(owner_database_url) == [OUTBOX_MIGRATION, MAC_MIGRATION]
    async with serving(settings) as local:
        before = await local.runtime.audit.verify()
        await local.runtime.audit.record(event_type="test", action="new")
        after = await local.runtime.audit.verify()

    assert before.valid is True
    assert after.valid is True
    assert after.checked == before.checked + 1
    rows = _owner_rows(owner_database_url, "SELECT * FROM audit_events ORDER BY seq")
    assert rows[: len(old)] == old


async def test_a_pending_event_written_before_the_mac_is_still_linked(
    owner_database_url: str, settings: Settings, data_dir: Path
):
    """An event left in the outbox by a writer before migration 0071 has no MAC (only the
    application holds the key, the migration cannot give it one): it is marked legacy and
    linked, not lost."""
    _undo_migrations(owner_database_url, outbox=False)
    with psycopg.connect(owner_database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO audit_pending (id, occurred_at, event_type, action, result)"
            " VALUES ('evt_before_the_mac', now(), 'test', 'left pending', 'success')"
        )

    assert apply_migrations(owner_database_url) == [MAC_MIGRATION]
    async with serving(settings) as local:
        linked = await local.runtime.audit.get("evt_before_the_mac")
        verification = await local.runtime.audit.verify()

    assert linked is not None and linked.action == "left pending"
    assert verification.valid is True
    assert _owner_rows(owner_database_url, "SELECT * FROM audit_pending") == []
    assert _owner_rows(owner_database_url, "SELECT * FROM audit_pending_rejected") == []


def _insert_pending(url: str, event_id: str, *, mac: str | None, action: str = "delete") -> None:
    """What someone holding only the app role's credentials can put in the outbox."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO audit_pending (id, occurred_at, event_type, user_id, action,"
            " resource_type, resource_id, result, ip_address, details, mac)"
            " VALUES (%s, '2020-01-01T00:00:00Z', 'secret', 'usr_someone', %s, 'secret',"
            " 'prod-db', 'success', '10.0.0.1', %s, %s)",
            (event_id, action, Jsonb({"forged": True}), mac),
        )


def _pending_fields(event_id: str, action: str = "delete") -> dict[str, Any]:
    """The fields `_insert_pending` writes, as the chain hashes them."""
    return {
        "id": event_id,
        "occurred_at": datetime(2020, 1, 1, tzinfo=UTC),
        "event_type": "secret",
        "user_id": "usr_someone",
        "action": action,
        "resource_type": "secret",
        "resource_id": "prod-db",
        "result": "success",
        "ip_address": "10.0.0.1",
        "details": {"forged": True},
    }


async def test_an_event_forged_into_the_outbox_without_the_key_is_never_linked(
    client, admin, server, database_url, owner_database_url, caplog
):
    """The app role inserts backdated events into the outbox, without a MAC and with one it
    made up: neither is ever listed nor chained, verify stays valid, and each leaves a
    warning, a quarantined row and an `audit.pending_rejected` event."""
    caplog.set_level(logging.WARNING, logger="llm_orchestrator.audit.trail")
    _insert_pending(database_url, "evt_forged_no_mac", mac=None)
    _insert_pending(database_url, "evt_forged_made_up", mac="hmac-sha256:" + "0" * 64)
    with psycopg.connect(database_url, autocommit=True) as conn:  # cannot pass as legacy
        for column, value in (("legacy", "true"), ("position", "1")):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(
                    f"INSERT INTO audit_pending (id, occurred_at, event_type, action, result,"
                    f" {column}) OVERRIDING SYSTEM VALUE"
                    f" VALUES ('evt_x', now(), 'x', 'x', 'success', {value})"
                )

    listed = await _events(client, admin, limit=100)
    one = await client.get("/audit/events/evt_forged_no_mac", headers=admin.headers)

    ids_listed = [e["id"] for e in listed["events"]]
    assert "evt_forged_no_mac" not in ids_listed and "evt_forged_made_up" not in ids_listed
    assert one.status_code == 404
    assert (await _verify(client, admin))["valid"] is True
    rejected = await _events(client, admin, event_type="audit.pending_rejected")
    assert sorted(
        (e["details"]["pending_id"], e["details"]["reason"], e["result"])
        for e in rejected["events"]
    ) == [
        ("evt_forged_made_up", "mac_mismatch", "failure"),
        ("evt_forged_no_mac", "mac_mismatch", "failure"),
    ]
    quarantined = _owner_rows(
        owner_database_url, "SELECT id, reason FROM audit_pending_rejected ORDER BY position"
    )
    assert quarantined == [
        {"id": "evt_forged_no_mac", "reason": "mac_mismatch"},
        {"id": "evt_forged_made_up", "reason": "mac_mismatch"},
    ]
    assert _owner_rows(owner_database_url, "SELECT * FROM audit_pending") == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "refused the pending event" in w]) == 2
    key = await resolve_audit_key(server.runtime.settings, server.runtime.secrets)()
    assert not any(key.decode() in w for w in warnings)
    # Once quarantined, never linked later either.
    assert (await _events(client, admin, event_type="secret"))["total"] == 0


async def test_a_pending_row_that_cannot_be_linked_blocks_neither_reads_nor_writers(
    client, admin, server, database_url, owner_database_url
):
    """Pending rows whose id is already chained (a forged one, and a replay with a valid MAC)
    or repeated in the outbox are set aside: reads answer, verify is valid, and the events of
    every writer meanwhile (a request, writers in another process) are all chained."""
    key = await resolve_audit_key(server.runtime.settings, server.runtime.secrets)()
    chained = (await _events(client, admin, limit=1))["events"][0]["id"]
    _insert_pending(database_url, chained, mac=None)
    _insert_pending(database_url, chained, mac=pending_mac(key, _pending_fields(chained)))
    twice = _pending_fields("evt_twice")
    _insert_pending(database_url, "evt_twice", mac=pending_mac(key, twice))
    _insert_pending(database_url, "evt_twice", mac=pending_mac(key, twice))

    listed = await client.get("/audit/events", headers=admin.headers, params={"limit": 100})
    created = await client.post(
        "/workflows",
        headers=admin.headers,
        json={
            "name": "after the jam",
            "steps": [
                {
                    "id": "s",
                    "type": "llm",
                    "provider": "openai",
                    "model": "m",
                    "prompt": "p",
                    "output": ["o"],
                }
            ],
        },
    )
    async with another_process(server) as (trail, db):
        for i in range(3):
            async with db.transaction(pipelined=True) as conn:
                await trail.record(event_type="test", action=f"other {i}", conn=conn)
            await trail.link_pending()
        await trail.record(event_type="test", action="other alone")
    verification = await client.get("/audit/verify", headers=admin.headers)

    assert listed.status_code == 200, listed.text
    assert created.status_code == 201, created.text
    assert verification.status_code == 200, verification.text
    assert verification.json()["valid"] is True
    workflow_id = created.json()["id"]
    assert (await _events(client, admin, resource_id=workflow_id))["total"] == 1
    others = await _events(client, admin, event_type="test")
    assert sorted(e["action"] for e in others["events"]) == [
        "other 0",
        "other 1",
        "other 2",
        "other alone",
    ]
    assert (await _events(client, admin, event_type="secret"))["total"] == 1  # evt_twice once
    assert _owner_rows(owner_database_url, "SELECT * FROM audit_pending") == []
    quarantined = _owner_rows(
        owner_database_url, "SELECT id, reason FROM audit_pending_rejected ORDER BY position"
    )
    assert quarantined == [
        {"id": chained, "reason": "mac_mismatch"},
        {"id": chained, "reason": "duplicate_id"},
        {"id": "evt_twice", "reason": "duplicate_id"},
    ]
    rejected = await _events(client, admin, event_type="audit.pending_rejected")
    assert rejected["total"] == 3


async def test_an_append_that_finds_the_head_taken_raises_no_warning(
    client, admin, server, owner_database_url
):
    """It lets its try go before it queues: PostgreSQL sees no ROLLBACK outside a
    transaction (a warning in its log, and to the client, on every contended append)."""
    runtime = server.runtime
    db = Database(runtime.db.url, min_size=1, max_size=1)  # one connection: the one watched
    trail = AuditTrail(
        AuditRepository(db),
        utcnow,
        key_source=resolve_audit_key(runtime.settings, runtime.secrets),
        anchors=LogAnchorStore(None),
    )
    notices: list[str] = []
    try:
        async with db.connection() as conn:
            conn.add_notice_handler(lambda d: notices.append(f"{d.severity}: {d.message_primary}"))
            await conn.execute("ROLLBACK")  # the handler sees what the test looks for
        assert notices == ["WARNING: there is no transaction in progress"]
        notices.clear()
        async with head_held(owner_database_url):
            await trail.record(event_type="test", action="while held")
            pending = _owner_rows(owner_database_url, "SELECT action FROM audit_pending")
    finally:
        await db.close()

    assert [p["action"] for p in pending] == ["while held"]
    assert notices == []
    listed = await _events(client, admin, event_type="test")
    assert [e["action"] for e in listed["events"]] == ["while held"]


SECRET_PLAIN = "sk-outbox-secret-plain-0001"
SECRET_QUOTED = 'pa"ss\\word-outbox-0002'
"""A secret with characters JSON escapes: the canonical JSON does not show it verbatim."""


@pytest.mark.parametrize(
    ("secret", "details"),
    [
        (SECRET_PLAIN, {"reason": f"provider said: bad key {SECRET_PLAIN}"}),
        (SECRET_PLAIN, {"raison": f"clé refusée : {SECRET_PLAIN}"}),
        (SECRET_PLAIN, {SECRET_PLAIN: "as a key"}),
        (SECRET_QUOTED, {"reason": f"password {SECRET_QUOTED} refused"}),
    ],
    ids=["plain", "beside-non-ascii", "in-a-key", "with-json-escapes"],
)
async def test_a_secret_in_an_outbox_event_is_redacted_and_the_event_still_links(
    client, admin, server, owner_database_url, secret, details
):
    """An event written through the outbox (the submit's path) never stores a registered
    secret, whether or not its JSON shows the secret verbatim, and links and verifies."""
    from llm_orchestrator.redaction import register_secret

    register_secret(secret)
    runtime = server.runtime
    event = await runtime.audit.outbox_write(
        prefix="t_", event_type="test", action="outbox-redaction", details=details
    )
    assert event is not None
    sql, params = event
    await runtime.db.rows(sql, params)
    await runtime.audit.link_pending()

    assert (await _verify(client, admin))["valid"] is True  # a read links what is pending
    stored = _owner_rows(
        owner_database_url,
        "SELECT details::text AS details FROM audit_events WHERE action = 'outbox-redaction'",
    )
    assert len(stored) == 1
    assert secret not in repr(json.loads(stored[0]["details"]))
    assert "[redacted]" in stored[0]["details"]
