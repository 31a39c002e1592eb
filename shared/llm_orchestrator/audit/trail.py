"""The tamper-evident audit trail.

``event_hash = "hmac-sha256:" + HMAC-SHA-256(key, prev_hash + canonical_json(event))``, where
the canonical JSON covers every stored field but the hashes, with sorted keys and no
whitespace, and the key lives outside the database (configuration, a file in the data
directory, or the secrets backend). Changing, removing or reordering any event breaks the
link to its successor, and recomputing the links needs the key, which someone holding only
the database's credentials lacks. ``verify`` names the first event whose stored hash no
longer matches, and checks the chain against the newest anchor (``anchors.py``), which
catches a chain cut back to an earlier head.

Events written before the HMAC (``sha256:`` links, plain SHA-256, which anyone can
recompute) are accepted only as the chain's prefix, and only up to an authentic anchor,
which vouches for them: a local server anchors the head as soon as it starts.

Writers do not wait for one another (``store/audit.py``): a writer that finds the chain's
head free links its event at once; one that finds it taken commits its event to an outbox
instead, which whoever holds the head next links, in a batch. Nothing is left there: each
holder looks at the outbox again after letting the head go, in a local server through one
linker task woken then, elsewhere (a Lambda, which may be frozen as soon as it answers)
before the request answers. Every read of the trail (events, an event, verify, an anchor)
links what is pending first, so a reader never sees a gap: an event whose request has
returned is in the chain it reads.

Someone holding only the database's credentials can insert into the outbox, but cannot
have what they insert chained: each pending event carries ``pending_mac`` (HMAC-SHA-256
under the same key over ``"audit-pending\0"`` + the event's canonical JSON, so it is never
equal to a chain link), and the linker links only events whose MAC it recomputes. A pending
row it refuses (a bad MAC, an id already chained or repeated) is quarantined in
``audit_pending_rejected``, logged as a warning, and recorded by an
``audit.pending_rejected`` event in the chain, linked like any other.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, Required, TypedDict

from llm_orchestrator import ids
from llm_orchestrator.audit.anchors import Anchor, AnchorStore, anchor_is_authentic, sign_anchor
from llm_orchestrator.redaction import contains_secret, redact_data
from llm_orchestrator.store.audit import (
    AuditFilter,
    AuditRecord,
    AuditRepository,
    Sealer,
    outbox_insert,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from llm_orchestrator.store.db import Connection

log = logging.getLogger(__name__)

Result = Literal["success", "failure", "partial_success"]


class AuditEvent(TypedDict, total=False):
    """What a caller says of an event (``record`` and ``outbox_write`` take it as keywords);
    the trail adds its id and time."""

    event_type: Required[str]
    action: Required[str]
    result: Result
    user_id: str | None
    resource_type: str | None
    resource_id: str | None
    ip_address: str | None
    details: Mapping[str, Any] | None


GENESIS_HASH = "sha256:genesis"
HMAC_PREFIX = "hmac-sha256:"
LEGACY_PREFIX = "sha256:"
KeySource = Callable[[], Awaitable[bytes]]


def _canonical_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    return str(value)


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=_canonical_default)
"""What ``json.dumps`` with these options builds on every call (an encoder), built once."""


def canonical_json(fields: Mapping[str, Any]) -> str:
    return _CANONICAL.encode(fields)


def chain_hash(key: bytes, prev_hash: str, fields: Mapping[str, Any]) -> str:
    return link_hash(key, prev_hash, canonical_json(fields))


def link_hash(key: bytes, prev_hash: str, canonical: str) -> str:
    """:func:`chain_hash` of fields whose canonical JSON is given."""
    digest = hmac.new(key, (prev_hash + canonical).encode(), hashlib.sha256)
    return f"{HMAC_PREFIX}{digest.hexdigest()}"


LINK_PAUSE_SECONDS = 0.05
"""How long a local server's linker task lets events gather in the outbox after it is woken
before it links them. Each round costs two round trips and a pass over the chain's head
whatever it links, and the task is woken after every commit that queued an event: without
a pause, a burst of submits was linked a few events a round (184 rounds for 1,000 events),
the rounds paced by how fast each went. Nobody waits for the task: every read of the trail
links what is pending first. Only after a round that found a burst going on (at least
``LINK_BUSY_EVENTS`` events): a lone event is linked at once, as before."""
LINK_BUSY_EVENTS = 2
PENDING_DOMAIN = b"audit-pending\0"
REJECTED_EVENT_TYPE = "audit.pending_rejected"


def pending_mac(key: bytes, fields: Mapping[str, Any]) -> str:
    """The MAC a writer seals a pending event with (the linker links it only if it matches);
    domain-separated from the chain's links, which hash ``prev_hash`` + the same JSON."""
    return pending_mac_of(key, canonical_json(fields))


def pending_mac_of(key: bytes, canonical: str) -> str:
    """:func:`pending_mac` of fields whose canonical JSON is given."""
    digest = hmac.new(key, PENDING_DOMAIN + canonical.encode(), hashlib.sha256)
    return f"{HMAC_PREFIX}{digest.hexdigest()}"


def legacy_chain_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    """The keyless link of events written before the HMAC; only ever verified, not written."""
    digest = hashlib.sha256((prev_hash + canonical_json(fields)).encode()).hexdigest()
    return f"{LEGACY_PREFIX}{digest}"


def _hashed_fields(record: AuditRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "occurred_at": record.occurred_at,
        "event_type": record.event_type,
        "user_id": record.user_id,
        "action": record.action,
        "resource_type": record.resource_type,
        "resource_id": record.resource_id,
        "result": record.result,
        "ip_address": record.ip_address,
        "details": record.details,
    }


@dataclass(frozen=True)
class Verification:
    valid: bool
    checked: int
    first_invalid_event_id: str | None
    anchor: Anchor | None = None
    """The anchor the chain was checked against (None: no anchor readable here)."""
    problem: str | None = None
    """Why the chain is invalid, in words."""


class AuditTrail:
    def __init__(
        self,
        repository: AuditRepository,
        clock: Callable[[], datetime],
        *,
        key_source: KeySource,
        anchors: AnchorStore,
    ) -> None:
        self._repo = repository
        self._now = clock
        self._key_source = key_source
        self._key: bytes | None = None
        self._sealer: Sealer | None = None
        self._anchors = anchors
        self._anchored_seq: int | None = None
        self._anchoring: asyncio.Task[None] | None = None
        self._linker: asyncio.Task[None] | None = None
        self._link_wanted = asyncio.Event()
        self._linking_stops = False
        # Whether the last writer here found the chain's head taken (until the outbox is
        # found empty again): then writers skip the try and go straight to the outbox. Only
        # a guess, for speed; what is linked when does not depend on it.
        self._contended = False

    async def _get_key(self) -> bytes:
        if self._key is None:
            self._key = await self._key_source()
        return self._key

    async def record(self, *, conn: Connection | None = None, **event: Unpack[AuditEvent]) -> None:
        """Append an event; with ``conn`` (a store transaction), as part of that transaction,
        so the event commits if and only if the caller's writes do: the caller then calls
        :meth:`link_pending` after its commit. Without ``conn`` it is committed (and, unless
        another writer is linking at that moment, linked) when this returns."""
        fields = self._fields(event)
        if self._contended and self._linker is not None:
            # Busy: straight to the outbox, which the linker task links in batches.
            await self._repo.queue(fields, await self._get_sealer(), conn=conn)
            if conn is None:
                self._link_wanted.set()
            return
        appended = await self._repo.append(
            fields, await self._get_sealer(), conn=conn, try_head=not self._contended
        )
        self._contended = appended.head_taken
        if conn is None and appended.look_again:
            await self.link_pending()

    async def outbox_write(
        self, *, prefix: str, **event: Unpack[AuditEvent]
    ) -> tuple[str, dict[str, Any]] | None:
        """The event as a sealed outbox insert (``store.audit.outbox_insert``) for a caller
        to send in the statement that makes its own write, which saves a transaction around
        the two; the caller calls :meth:`link_pending` after it. Only where a linker task
        links the outbox (a local server): there, a contended writer's event goes to the
        outbox anyway. None elsewhere: :meth:`record` with ``conn`` then."""
        if self._linker is None:
            return None
        fields, canonical, details = self._sealed_fields(event)
        return outbox_insert(
            fields, await self._get_sealer(), prefix=prefix, canonical=canonical, details=details
        )

    def _fields(self, event: AuditEvent) -> dict[str, Any]:
        return self._sealed_fields(event)[0]

    def _sealed_fields(self, event: AuditEvent) -> tuple[dict[str, Any], str, str]:
        """The event's stored fields, their canonical JSON (what its MAC and link hash) and
        the canonical JSON of its details (what the outbox stores).

        Stored timestamps have microsecond precision; hash exactly what is stored. No secret
        value reaches the trail, even one quoted in a failure's reason: every string of the
        event (keys included) is redacted, which is skipped only when the canonical JSON has
        no backslash in it (JSON escapes a quote, a backslash, a control or a non-ASCII
        character with one), so that each string of the event stands in it verbatim, and
        no registered secret occurs in it: then none occurs in any of the event's strings.
        """
        details_json = canonical_json(event.get("details") or {})
        fields: dict[str, Any] = {
            "event_type": event["event_type"],
            "user_id": event.get("user_id"),
            "action": event["action"],
            "resource_type": event.get("resource_type"),
            "resource_id": event.get("resource_id"),
            "result": event.get("result", "success"),
            "ip_address": event.get("ip_address"),
            "details": json.loads(details_json),
            "id": ids.event_id(),
            "occurred_at": self._now().astimezone(UTC),
        }
        canonical = canonical_json(fields)
        if "\\" in canonical or contains_secret(canonical):
            stamped = {"id": fields.pop("id"), "occurred_at": fields.pop("occurred_at")}
            fields = redact_data(fields)
            fields.update(stamped)
            canonical = canonical_json(fields)
            details_json = canonical_json(fields["details"])
        return fields, canonical, details_json

    async def _get_sealer(self) -> Sealer:
        if self._sealer is None:
            key = await self._get_key()
            self._sealer = Sealer(
                canonical=canonical_json,
                link=partial(link_hash, key),
                pending_mac=partial(pending_mac_of, key),
                rejection=self._rejection,
            )
        return self._sealer

    def _rejection(self, row: dict[str, Any], reason: str) -> dict[str, Any]:
        """The event recording a pending row the linker refused (quarantined, never linked).
        Its details name the row; the row's content stays in ``audit_pending_rejected``."""
        log.warning(
            "audit outbox: refused the pending event at position %s (%s); it is quarantined"
            " in audit_pending_rejected and never linked",
            row["position"],
            reason,
        )
        details = {"pending_position": int(row["position"]), "pending_id": str(row["id"])[:200]}
        return self._fields(
            {
                "event_type": REJECTED_EVENT_TYPE,
                "action": "reject",
                "resource_type": "audit_pending",
                "resource_id": str(row["position"]),
                "result": "failure",
                "details": {**details, "reason": reason},
            }
        )

    async def link_pending(self) -> None:
        """After the commit of a transaction that recorded events (``record(conn=…)``): link
        them. With a linker task (a local server), wake it; otherwise link now, unless
        another writer holds the head (which then links them before it is done). Never
        raises: the events are committed, and the next link or read picks them up."""
        if self._linker is not None:
            self._link_wanted.set()
            return
        try:
            await self._link(wait=False)
        except Exception:
            log.exception("could not link the audit outbox; the next write or read will")

    async def _link(self, *, wait: bool, look_first: bool = True) -> int:
        """Link what is pending; the number of events linked."""
        linked = await self._repo.link(await self._get_sealer(), wait=wait, look_first=look_first)
        if linked.settled:
            self._contended = False
        return linked.linked

    async def _link_for_reading(self) -> None:
        """Readers see every event committed before they asked: link what is pending."""
        await self._link(wait=True)

    def start_linking(self) -> None:
        """Link in a task of this process, woken after each commit (a local server)."""
        if self._linker is None:
            self._linker = asyncio.get_running_loop().create_task(self._link_continuously())

    async def _link_continuously(self) -> None:
        self._link_wanted.set()  # whatever a previous process left in the outbox
        busy = False
        while not self._linking_stops:
            await self._link_wanted.wait()
            if busy and not self._linking_stops:
                # Let the events of a burst gather: one round then links many.
                await asyncio.sleep(LINK_PAUSE_SECONDS)
            self._link_wanted.clear()
            try:
                # Woken by a commit to the outbox: no look at whether it holds anything.
                busy = await self._link(wait=False, look_first=False) >= LINK_BUSY_EVENTS
            except Exception:  # the next wake-up, or a reader, links them
                busy = False
                log.exception("could not link the audit outbox")

    async def get(self, event_id: str) -> AuditRecord | None:
        await self._link_for_reading()
        return await self._repo.get(event_id)

    async def query(
        self,
        *,
        limit: int,
        offset: int,
        user_id: str | None = None,
        event_type: str | None = None,
        resource_type: str | None = None,
        resource_id: str | None = None,
        result: Result | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
    ) -> tuple[list[AuditRecord], int]:
        """Events matching every filter given (None: any), newest first."""
        await self._link_for_reading()
        audit_filter = AuditFilter(
            user_id=user_id,
            event_type=event_type,
            resource_type=resource_type,
            resource_id=resource_id,
            result=result,
            start_time=start_time,
            end_time=end_time,
        )
        return await self._repo.query(audit_filter, limit=limit, offset=offset)

    async def anchor(self) -> Anchor:
        """Sign the chain's head now and write it to the anchor store."""
        key = await self._get_key()
        await self._link_for_reading()
        seq, head_hash = await self._repo.head()
        anchor = sign_anchor(key, seq, head_hash, self._now().astimezone(UTC))
        await self._anchors.write(anchor)
        self._anchored_seq = seq
        return anchor

    def start_anchoring(
        self, interval_seconds: float, *, leading: Callable[[], Awaitable[bool]] | None = None
    ) -> None:
        """Anchor every ``interval_seconds`` while the head moves (a local server's task).
        ``leading``: asked each round whether this process is the one of several serving
        processes that anchors (else every one would, N anchors per round)."""
        if self._anchoring is None and interval_seconds > 0:
            self._anchoring = asyncio.get_running_loop().create_task(
                self._anchor_periodically(interval_seconds, leading)
            )

    async def _anchor_periodically(
        self, interval_seconds: float, leading: Callable[[], Awaitable[bool]] | None
    ) -> None:
        first = True
        while True:
            if not first:
                await asyncio.sleep(interval_seconds)
            first = False
            try:
                if leading is not None and not await leading():
                    continue
                await self._link_for_reading()
                seq, _ = await self._repo.head()
                if seq != self._anchored_seq:
                    await self.anchor()
            except Exception:  # the next round tries again; the server must go on
                log.exception("could not anchor the audit chain")

    async def close(self) -> None:
        if self._linker is not None:
            # Not cancelled: a task cancelled inside a statement would make psycopg wait for
            # the server's answer to a cancel request. It finishes its round and stops.
            self._linking_stops = True
            self._link_wanted.set()
            await self._linker
            self._linker = None
            try:
                await self._link_for_reading()
            except Exception:
                log.warning("could not link the audit outbox on shutdown")
        if self._anchoring is not None:
            self._anchoring.cancel()
            self._anchoring = None
            try:
                seq, _ = await self._repo.head()
                if seq != self._anchored_seq:
                    await self.anchor()  # a last anchor on the way out
            except Exception:
                log.warning("could not anchor the audit chain on shutdown")

    async def verify(self) -> Verification:
        key = await self._get_key()
        anchor = await self._anchors.latest()
        if anchor is not None and not anchor_is_authentic(key, anchor):
            return Verification(False, 0, None, anchor, "the latest anchor's signature is invalid")
        await self._link_for_reading()
        head_seq, head_hash = await self._repo.head()
        expected_prev = GENESIS_HASH
        checked = 0
        expected_seq = 1
        hmac_seen = False
        async for record in self._repo.iterate_chain(upto=head_seq):
            checked += 1
            fields = _hashed_fields(record)
            vouched = anchor is not None and record.seq <= anchor.seq
            if record.event_hash.startswith(LEGACY_PREFIX) and vouched and not hmac_seen:
                recomputed = legacy_chain_hash(expected_prev, fields)
            else:
                hmac_seen = True
                recomputed = chain_hash(key, expected_prev, fields)
            if (
                record.seq != expected_seq
                or record.prev_hash != expected_prev
                or not hmac.compare_digest(record.event_hash, recomputed)
            ):
                return Verification(
                    False, checked, record.id, anchor, f"event {record.seq} does not match its hash"
                )
            if (
                anchor is not None
                and record.seq == anchor.seq
                and record.event_hash != anchor.event_hash
            ):
                return Verification(
                    False, checked, record.id, anchor, "the chain differs from its anchor"
                )
            expected_prev = record.event_hash
            expected_seq += 1
        if head_seq != checked or head_hash != expected_prev:
            return Verification(False, checked, None, anchor, "events were removed from the end")
        if anchor is not None and checked < anchor.seq:
            return Verification(
                False, checked, None, anchor, "the chain ends before its latest anchor"
            )
        return Verification(True, checked, None, anchor)
