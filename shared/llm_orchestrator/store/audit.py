"""The audit trail: an append-only, hash-chained table, and its outbox.

No writer waits for another. A writer tries the single chain-head row without waiting
(``FOR UPDATE SKIP LOCKED``): if it is free, the writer links its event at once (read the
head, compute the link with the ``sealer``, write the event and the new head), together with
whatever the outbox holds, and keeps the head until its commit. If another writer holds
it, the event goes to the outbox, ``audit_pending``, and the writer does not wait: whoever
holds the head next links the outbox, in a batch, in ``position`` order (one statement
deletes the batch from the outbox and inserts the linked events). The seq order is the
link order. An append may run inside a caller's transaction (``conn``): the event then
commits, or not, with the caller's writes.

Nothing is left in the outbox: a writer whose event went there tries the head again after
its commit (:meth:`AuditRepository.link` with ``wait=False``), and every holder of the head
looks at the outbox again after letting it go, which covers a writer whose second try
found the head taken too. Readers link with ``wait=True`` first, so an event whose request
has returned is in the chain anyone reads.

Only what this application wrote is linked. The app's database role may INSERT into the
outbox (writers must), so a writer seals each pending event with a MAC under the chain's key
(:attr:`Sealer.pending_mac`, domain-separated from the chain's hash), and the linker links a
pending event only if the MAC it recomputes matches: someone holding only the database's
credentials cannot have an event of theirs chained. A pending event that cannot be linked
(its MAC does not match, or its id is in the chain already or earlier in the batch) does not
hold up the others: the linker moves it to ``audit_pending_rejected``, which nothing links
from, and chains an event of its own saying so (:attr:`Sealer.rejection`). Events pending
before the MAC existed (migration 0071) are marked ``legacy``, which the app role cannot set,
and are linked without one.

Statements that link go out as multi-statement queries (client-side binding: psycopg's
pipeline would add a round trip of its own for its final sync), two round trips per batch.
"""

from __future__ import annotations

import functools
import hmac
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from llm_orchestrator.store.db import Connection, Database, fetch_page


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    id: str
    occurred_at: datetime
    event_type: str
    user_id: str | None
    action: str
    resource_type: str | None
    resource_id: str | None
    result: str
    ip_address: str | None
    details: dict[str, Any]
    prev_hash: str
    event_hash: str


@dataclass(frozen=True)
class AuditFilter:
    user_id: str | None = None
    event_type: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    result: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None

    def sql(self) -> tuple[str, tuple[Any, ...]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("user_id", self.user_id),
            ("event_type", self.event_type),
            ("resource_type", self.resource_type),
            ("resource_id", self.resource_id),
            ("result", self.result),
        ):
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        if self.start_time is not None:
            clauses.append("occurred_at >= %s")
            params.append(self.start_time)
        if self.end_time is not None:
            clauses.append("occurred_at <= %s")
            params.append(self.end_time)
        return " AND ".join(clauses) or "TRUE", tuple(params)


def _record(row: dict[str, Any]) -> AuditRecord:
    return AuditRecord(**{k: row[k] for k in AuditRecord.__dataclass_fields__})


@dataclass(frozen=True, repr=False)
class Sealer:
    """What linking needs of the audit key (``audit/trail.py`` makes one). Both hashes are
    over the same canonical JSON of an event's fields, which the linker computes once per
    pending event."""

    canonical: Callable[[dict[str, Any]], str]
    """An event's fields (those the chain hashes) -> their canonical JSON."""
    link: Callable[[str, str], str]
    """(previous hash, canonical JSON) -> the event's hash in the chain."""
    pending_mac: Callable[[str], str]
    """A pending event's canonical JSON -> its MAC."""
    rejection: Callable[[dict[str, Any], str], dict[str, Any]]
    """A pending row refused and why -> the fields of the event that records it."""

    def chain(self, prev_hash: str, fields: dict[str, Any]) -> str:
        return self.link(prev_hash, self.canonical(fields))


LINK_BATCH = 1000
"""At most this many pending events are linked per transaction."""

_EVENT_FIELDS = (
    "id",
    "occurred_at",
    "event_type",
    "user_id",
    "action",
    "resource_type",
    "resource_id",
    "result",
    "ip_address",
)
_HASHED_FIELDS = (*_EVENT_FIELDS, "details")
_COLUMNS = ", ".join(_HASHED_FIELDS)
_VALUES = ", ".join(f"%({name})s" for name in _HASHED_FIELDS)
_QUEUE = f"INSERT INTO audit_pending ({_COLUMNS}, mac) VALUES ({_VALUES}, %(mac)s)"
_TRY_HEAD = "SELECT seq, last_hash FROM audit_chain_head WHERE singleton FOR UPDATE SKIP LOCKED"
_WAIT_FOR_HEAD = "SELECT seq, last_hash FROM audit_chain_head WHERE singleton FOR UPDATE"
# A second statement reads the outbox, so that its snapshot is taken after the head's lock
# was granted (what a linker committed just before is seen as moved); it reads nothing
# unless this transaction holds the head (its own lock does not block it; another's does).
# Whether a pending id is chained already is one index probe per pending row (a lateral
# join): as an ``EXISTS`` in the select list the planner hashed the whole of audit_events
# for it on every link (a scan that grows with the trail: 1.7 ms at 5,000 events, against
# 0.14 ms for the probes).
_READ_PENDING = (
    "WITH held AS (SELECT FROM audit_chain_head WHERE singleton FOR UPDATE SKIP LOCKED)"
    f" SELECT position, {_COLUMNS}, mac, legacy, chained.chained__ IS NOT NULL AS taken"
    " FROM audit_pending p LEFT JOIN LATERAL (SELECT TRUE AS chained__ FROM audit_events e"
    " WHERE e.id = p.id LIMIT 1) chained ON TRUE"
    " WHERE EXISTS (SELECT FROM held) ORDER BY position LIMIT %(limit)s"
)
_MOVE = (
    "WITH moved AS (DELETE FROM audit_pending WHERE position = ANY(%(positions)s)"
    f" RETURNING position, {_COLUMNS})"
    f" INSERT INTO audit_events (seq, {_COLUMNS}, prev_hash, event_hash)"
    f" SELECT link.seq, {', '.join(f'moved.{c}' for c in _HASHED_FIELDS)},"
    " link.prev_hash, link.event_hash FROM moved JOIN unnest(%(positions)s::bigint[],"
    " %(seqs)s::bigint[], %(prevs)s::text[], %(hashes)s::text[])"
    " AS link(position, seq, prev_hash, event_hash) USING (position)"
)
_QUARANTINE = (
    "WITH bad AS (DELETE FROM audit_pending WHERE position = ANY(%(positions)s)"
    f" RETURNING position, {_COLUMNS}, mac, legacy)"
    f" INSERT INTO audit_pending_rejected (position, {_COLUMNS}, mac, legacy, reason)"
    f" SELECT bad.position, {', '.join(f'bad.{c}' for c in _HASHED_FIELDS)}, bad.mac,"
    " bad.legacy, bad_why.reason FROM bad JOIN unnest(%(positions)s::bigint[],"
    " %(reasons)s::text[]) AS bad_why(position, reason) USING (position)"
)
_INSERT_EVENT = (
    f"INSERT INTO audit_events (seq, {_COLUMNS}, prev_hash, event_hash)"
    f" VALUES (%(seq)s, {_VALUES}, %(prev_hash)s, %(event_hash)s)"
)
_SET_HEAD = "UPDATE audit_chain_head SET seq = %(seq)s, last_hash = %(event_hash)s WHERE singleton"
_LINK_OWN = f"WITH head AS ({_SET_HEAD}) {_INSERT_EVENT}"
_ANY_PENDING = "SELECT EXISTS (SELECT FROM audit_pending) AS queued"


def _event_params(fields: dict[str, Any]) -> dict[str, Any]:
    return {**{name: fields[name] for name in _EVENT_FIELDS}, "details": Jsonb(fields["details"])}


def _pending_mac(fields: dict[str, Any], sealer: Sealer, canonical: str | None = None) -> str:
    """The outbox MAC of ``fields``; ``canonical``: their canonical JSON, when made already."""
    if canonical is None:
        canonical = sealer.canonical({name: fields[name] for name in _HASHED_FIELDS})
    return sealer.pending_mac(canonical)


def _queue_params(fields: dict[str, Any], sealer: Sealer) -> dict[str, Any]:
    return {**_event_params(fields), "mac": _pending_mac(fields, sealer)}


def outbox_insert(
    fields: dict[str, Any],
    sealer: Sealer,
    *,
    prefix: str,
    canonical: str | None = None,
    details: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """One event's ``audit_pending`` insert (sealed, as :meth:`AuditRepository.queue` seals
    it) for a caller to send inside a statement of its own (a data-modifying CTE beside its
    write): the event then commits, or not, with that write, and the caller links after the
    commit, as after :meth:`AuditRepository.queue`. ``INSERT ... SELECT`` (the caller may
    add ``FROM`` and ``WHERE``), parameters named ``prefix`` + field so that they do not
    collide with the caller's.

    ``canonical``: the canonical JSON of ``fields`` (the sealer's), and ``details``: that
    of their details, when the caller has them already: each is then not computed again,
    and the details travel as that text (cast to ``jsonb`` by the statement) rather than
    being encoded once more by psycopg's ``Jsonb`` dumper."""
    params = {prefix + name: fields[name] for name in _EVENT_FIELDS}
    params[prefix + "details"] = details or sealer.canonical(fields["details"])
    params[prefix + "mac"] = _pending_mac(fields, sealer, canonical)
    return f"INSERT INTO audit_pending ({_COLUMNS}, mac) SELECT {_outbox_values(prefix)}", params


@functools.cache
def _outbox_values(prefix: str) -> str:
    """The select list of :func:`outbox_insert` (the details sent as canonical JSON text)."""
    return ", ".join(
        f"%({prefix}{name})s::{_OUTBOX_TYPES[name]}" if name == "details" else f"%({prefix}{name})s"
        for name in (*_HASHED_FIELDS, "mac")
    )


_OUTBOX_TYPES = {
    "id": "text",
    "occurred_at": "timestamptz",
    "event_type": "text",
    "user_id": "text",
    "action": "text",
    "resource_type": "text",
    "resource_id": "text",
    "result": "text",
    "ip_address": "text",
    "details": "jsonb",
    "mac": "text",
}
"""The SQL type of each outbox column (``outbox_insert_many`` casts its values to them)."""
assert set(_OUTBOX_TYPES) == {*_HASHED_FIELDS, "mac"}, "an outbox column without its type"


def _outbox_value(position: int, name: str) -> str:
    """Column ``name`` of an ``outbox_insert_many`` row (``e.v``, a JSON array)."""
    kind = _OUTBOX_TYPES[name]
    if kind == "text":
        return f"e.v->>{position}"
    return f"(e.v->>{position})::{kind}"


def _json_default(value: Any) -> Any:
    """What ``json.dumps`` writes for an event's value it cannot itself: a timestamp. (The
    details are their canonical JSON text already, read back by ``->>`` and cast.)"""
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"an outbox value of type {type(value).__name__}")


def outbox_insert_many(
    events: list[tuple[str, dict[str, Any]]], *, prefix: str
) -> tuple[str, dict[str, Any]]:
    """Several :func:`outbox_insert` answers (made with ``prefix``) as one ``INSERT``, the
    events in the order given (their outbox positions, and so their order in the chain,
    follow it). The events travel as one JSON array of rows, one parameter
    (``prefix`` + ``events``): an array parameter per column costs psycopg's Python
    adaptation of every element, several times the JSON's."""
    columns = (*_HASHED_FIELDS, "mac")
    values = ", ".join(_outbox_value(position, name) for position, name in enumerate(columns))
    names = [prefix + name for name in columns]
    rows = [[event[1][name] for name in names] for event in events]
    return (
        f"INSERT INTO audit_pending ({_COLUMNS}, mac) SELECT {values}"
        f" FROM jsonb_array_elements(%({prefix}events)s::jsonb) WITH ORDINALITY AS e (v, n)"
        " ORDER BY e.n",
        {prefix + "events": json.dumps(rows, default=_json_default)},
    )


MAC_MISMATCH = "mac_mismatch"
DUPLICATE_ID = "duplicate_id"


def _screen(
    pending: list[dict[str, Any]], own: dict[str, Any] | None, sealer: Sealer
) -> tuple[list[tuple[dict[str, Any], str]], list[tuple[dict[str, Any], str]]]:
    """The pending rows that may be linked (with their canonical JSON, which their link
    hashes too), and those that may not (with the reason): a MAC
    that does not match (not written by this application), or an id already in the chain,
    earlier in the batch or the writer's own (the insert would fail, and with it the whole
    batch and the writer's event)."""
    accepted: list[tuple[dict[str, Any], str]] = []
    rejected: list[tuple[dict[str, Any], str]] = []
    seen = {own["id"]} if own is not None else set()
    for row in pending:
        canonical = sealer.canonical({name: row[name] for name in _HASHED_FIELDS})
        if not row["legacy"]:
            expected = sealer.pending_mac(canonical)
            if not hmac.compare_digest(str(row["mac"] or ""), expected):
                rejected.append((row, MAC_MISMATCH))
                continue
        if row["taken"] or row["id"] in seen:
            rejected.append((row, DUPLICATE_ID))
            continue
        seen.add(row["id"])
        accepted.append((row, canonical))
    return accepted, rejected


@dataclass
class _Links:
    """The links of one batch: the pending events moved, then the events recording the
    pending rows refused, then (optionally) the writer's own event, each linked to the one
    before, from the head's ``(seq, last_hash)``."""

    seq: int
    event_hash: str
    move: dict[str, list[Any]]
    quarantine: dict[str, list[Any]]
    direct: list[dict[str, Any]]

    @classmethod
    def compute(
        cls,
        head: dict[str, Any],
        pending: list[dict[str, Any]],
        own: dict[str, Any] | None,
        sealer: Sealer,
    ) -> _Links:
        seq, prev = int(head["seq"]), str(head["last_hash"])
        accepted, rejected = _screen(pending, own, sealer)
        move: dict[str, list[Any]] = {"positions": [], "seqs": [], "prevs": [], "hashes": []}
        for row, canonical in accepted:
            seq += 1
            event_hash = sealer.link(prev, canonical)
            move["positions"].append(int(row["position"]))
            move["seqs"].append(seq)
            move["prevs"].append(prev)
            move["hashes"].append(event_hash)
            prev = event_hash
        quarantine: dict[str, list[Any]] = {
            "positions": [int(row["position"]) for row, _ in rejected],
            "reasons": [reason for _, reason in rejected],
        }
        direct: list[dict[str, Any]] = []
        events = [sealer.rejection(row, reason) for row, reason in rejected]
        for fields in [*events, *([own] if own is not None else [])]:
            seq += 1
            event_hash = sealer.chain(prev, fields)
            direct.append(
                {**_event_params(fields), "seq": seq, "prev_hash": prev, "event_hash": event_hash}
            )
            prev = event_hash
        return cls(seq, prev, move, quarantine, direct)

    @property
    def linked(self) -> int:
        return len(self.move["positions"]) + len(self.direct)

    def statements(self) -> list[tuple[str, dict[str, Any]]]:
        """What writes the batch and moves the head (the head moves once, last)."""
        out: list[tuple[str, dict[str, Any]]] = []
        if self.move["positions"]:
            out.append((_MOVE, dict(self.move)))
        if self.quarantine["positions"]:
            out.append((_QUARANTINE, dict(self.quarantine)))
        out.extend((_INSERT_EVENT, event) for event in self.direct[:-1])
        if self.direct:
            out.append((_LINK_OWN, self.direct[-1]))
        else:
            out.append((_SET_HEAD, {"seq": self.seq, "event_hash": self.event_hash}))
        return out


@dataclass(frozen=True)
class Appended:
    head_taken: bool
    """Another writer held the chain's head: the event went to the outbox."""
    look_again: bool
    """The outbox must be looked at after the commit (:meth:`AuditRepository.link`)."""
    linked: int = 0
    """Events linked by this transaction (the writer's own included)."""


@dataclass(frozen=True)
class Linked:
    linked: int
    """Events linked."""
    settled: bool
    """The outbox was found empty after the last link (not left to another writer)."""


class AuditRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(
        self,
        fields: dict[str, Any],
        sealer: Sealer,
        *,
        conn: Connection | None = None,
        try_head: bool = True,
    ) -> Appended:
        """Append one event without waiting for any other writer.

        With ``try_head``, if the chain's head is free the event is linked at once, with
        whatever the outbox holds, and the head stays held until the commit; if another
        writer holds it, or without ``try_head`` (a caller that expects it taken), the event
        goes to the outbox. With ``conn`` (a pipelined transaction) this happens in the
        caller's transaction: the event commits, or not, with the caller's writes, and the
        caller links (:meth:`link`) after its commit, always: while it held the head, another
        writer may have left an event in the outbox. Without, in a transaction of its own,
        and :attr:`Appended.look_again` says whether to link after.
        """
        if conn is not None:
            if not try_head:
                await self.queue(fields, sealer, conn=conn)
                return Appended(head_taken=True, look_again=True)
            return await _append_in(conn, fields, sealer)
        async with self._db.connection() as own:
            return await _append_alone(own, fields, sealer, try_head)

    async def queue(
        self, fields: dict[str, Any], sealer: Sealer, *, conn: Connection | None = None
    ) -> None:
        """Only commit the event to the outbox (with ``conn``: in the caller's transaction, no
        round trip of its own); someone must link it after the commit."""
        params = _queue_params(fields, sealer)
        if conn is not None:
            await conn.execute(_QUEUE, params)
            return
        async with self._db.connection() as own:
            await own.execute(_QUEUE, params)

    async def link(
        self, sealer: Sealer, *, wait: bool, batch: int = LINK_BATCH, look_first: bool = True
    ) -> Linked:
        """Link what the outbox holds into the chain.

        ``wait=False`` gives up at once when another writer holds the chain head (that one
        looks at the outbox after it lets the head go); ``wait=True`` (a reader, which must
        see every committed event) waits for the head. One round trip when the outbox is
        empty; otherwise two per batch. ``look_first=False`` (a caller told that an event
        was just committed to the outbox, which it then nearly always holds) skips the
        look at whether it is empty: two round trips per batch, two when it is empty.
        """
        linked = 0
        async with self._db.connection() as conn:
            if look_first:
                cur = await conn.execute(_ANY_PENDING)
                row = await cur.fetchone()
                if not (row and row["queued"]):
                    return Linked(0, settled=True)
            client = psycopg.AsyncClientCursor(conn)
            while True:
                lock = _WAIT_FOR_HEAD if wait else _TRY_HEAD
                await client.execute(f"BEGIN; {lock}; {_read_pending(client, batch)}")
                done = await _finish(client, sealer, None)
                linked += done.linked
                wait = False  # later rounds only pick up what arrived meanwhile
                if not done.look_again:
                    return Linked(linked, settled=not done.head_taken)

    async def get(self, event_id: str) -> AuditRecord | None:
        async with self._db.connection() as conn:
            cur = await conn.execute("SELECT * FROM audit_events WHERE id = %s", (event_id,))
            row = await cur.fetchone()
        return _record(row) if row else None

    async def query(
        self, audit_filter: AuditFilter, *, limit: int, offset: int
    ) -> tuple[list[AuditRecord], int]:
        where, params = audit_filter.sql()
        async with self._db.connection() as conn:
            rows, total = await fetch_page(
                conn,
                source="audit_events",
                where=where,
                params=params,
                order_by="seq DESC",
                limit=limit,
                offset=offset,
            )
        return [_record(r) for r in rows], total

    async def iterate_chain(self, *, upto: int, batch: int = 1000) -> AsyncIterator[AuditRecord]:
        """Events ``1..upto`` in chain order, a batch at a time (verify reads them all)."""
        after = 0
        while after < upto:
            async with self._db.connection() as conn:
                cur = await conn.execute(
                    "SELECT * FROM audit_events WHERE seq > %s AND seq <= %s ORDER BY seq LIMIT %s",
                    (after, upto, batch),
                )
                rows = await cur.fetchall()
            if not rows:
                return
            for row in rows:
                yield _record(row)
            after = int(rows[-1]["seq"])

    async def head(self) -> tuple[int, str]:
        async with self._db.connection() as conn:
            cur = await conn.execute("SELECT seq, last_hash FROM audit_chain_head")
            row = await cur.fetchone()
        assert row is not None
        return int(row["seq"]), str(row["last_hash"])


def _read_pending(cur: psycopg.AsyncClientCursor[dict[str, Any]], batch: int) -> str:
    return cur.mogrify(_READ_PENDING, {"limit": batch})


async def _append_in(conn: Connection, fields: dict[str, Any], sealer: Sealer) -> Appended:
    """In the caller's (pipelined) transaction: one round trip tries the head and reads the
    outbox; the writes go out with the caller's next read or its commit."""
    head_cur = await conn.execute(_TRY_HEAD)
    pending_cur = await conn.execute(_READ_PENDING, {"limit": LINK_BATCH})
    head = await head_cur.fetchone()
    if head is None:
        await conn.execute(_QUEUE, _queue_params(fields, sealer))
        return Appended(head_taken=True, look_again=True)
    links = _Links.compute(head, await pending_cur.fetchall(), fields, sealer)
    for statement, params in links.statements():
        await conn.execute(statement, params)
    return Appended(head_taken=False, look_again=True, linked=links.linked)


async def _append_alone(
    conn: Connection, fields: dict[str, Any], sealer: Sealer, try_head: bool
) -> Appended:
    """Two round trips when the head is free (try it and read the outbox; link, commit and
    look at the outbox again), as many as an append that waited for the head took. When
    another writer holds it (or without ``try_head``): commit the event to the outbox and
    try the head once more, since the holder may have read the outbox before this commit;
    one round trip, and another to let go if the head is still taken."""
    cur = psycopg.AsyncClientCursor(conn)
    read = f"BEGIN; {_TRY_HEAD}; {_read_pending(cur, LINK_BATCH)}"
    let_go = ""
    if try_head:
        await cur.execute(read)
        head, pending = await _selected(cur)
        if head:
            return await _finish(cur, sealer, fields, head=head, pending=pending)
        let_go = "ROLLBACK; "  # first: a ROLLBACK outside a transaction is a warning
    # Sealed only now: an event linked at once above needs no MAC.
    queue = cur.mogrify(_QUEUE, _queue_params(fields, sealer))
    await cur.execute(f"{let_go}BEGIN; {queue}; COMMIT; {read}")
    done = await _finish(cur, sealer, None)
    return Appended(head_taken=True, look_again=done.look_again, linked=done.linked)


async def _finish(
    cur: psycopg.AsyncClientCursor[dict[str, Any]],
    sealer: Sealer,
    own: dict[str, Any] | None,
    *,
    head: list[dict[str, Any]] | None = None,
    pending: list[dict[str, Any]] | None = None,
) -> Appended:
    """After ``BEGIN``, a lock of the head and the outbox's read (the results on ``cur``
    unless given): link the batch (and ``own``) and commit, or let go."""
    if head is None or pending is None:
        selected = await _selected(cur)
        head, pending = selected[-2], selected[-1]
    if not head:
        # Someone else holds the head: it looks at the outbox after letting the head go.
        await cur.execute("ROLLBACK")
        return Appended(head_taken=True, look_again=False)
    if not pending and own is None:
        # Whatever committed while this transaction held the head is looked for after.
        await cur.execute(f"ROLLBACK; {_ANY_PENDING}")
        return Appended(head_taken=False, look_again=await _pending_after(cur))
    links = _Links.compute(head[0], pending, own, sealer)
    writes = "; ".join(cur.mogrify(sql, params) for sql, params in links.statements())
    await cur.execute(f"{writes}; COMMIT; {_ANY_PENDING}")
    again = await _pending_after(cur) or len(pending) == LINK_BATCH
    return Appended(head_taken=False, look_again=again, linked=links.linked)


async def _selected(cur: psycopg.AsyncClientCursor[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The rows of every SELECT of a multi-statement query, in order."""
    sets: list[list[dict[str, Any]]] = []
    while True:
        if cur.description is not None:
            sets.append(await cur.fetchall())
        if not cur.nextset():
            return sets


async def _pending_after(cur: psycopg.AsyncClientCursor[dict[str, Any]]) -> bool:
    sets = await _selected(cur)
    return bool(sets and sets[-1] and sets[-1][0]["queued"])
