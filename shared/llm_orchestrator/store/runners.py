"""Runners: the serving processes that run executions, and which one owns each run.

A runner is alive exactly while it holds the session-level advisory lock
``(RUNNER_LOCK_CLASS, id)`` on its own dedicated connection (:class:`RunnerLease`).
PostgreSQL drops the lock the moment the process or its connection dies (kill -9 too), so
"is the owner of this execution alive?" is one look at ``pg_locks``: no heartbeat, no clock.

The same connection LISTENs on the runner's channel (:func:`channel`): control requests
from the other processes (cancel, resume, restore of an execution this runner runs) and
their replies arrive there. Control operations are rare; no step or submit sends a NOTIFY.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from llm_orchestrator.executions.status import UNFINISHED
from llm_orchestrator.store.db import Database
from llm_orchestrator.store.fence import SECRET_WRITTEN_CHANNEL

log = logging.getLogger(__name__)

RUNNER_LOCK_CLASS = 0x6C6C6D6F
"""First key of every runner's advisory lock ('llmo'); the second is the runner's id."""
_UNFINISHED = [status.value for status in UNFINISHED]

_LIVE_RUNNERS = (
    "SELECT objid::bigint AS id FROM pg_locks WHERE locktype = 'advisory' AND granted"
    f" AND objsubid = 2 AND classid = {RUNNER_LOCK_CLASS}"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
"""The ids of the runners alive now (pg_locks is not transactional: it is the present)."""


def channel(runner_id: int) -> str:
    """The LISTEN/NOTIFY channel of one runner."""
    return f"llmo_runner_{runner_id}"


@dataclass(frozen=True)
class Owner:
    runner_id: int | None
    alive: bool


CONTROL_FRESH_SECONDS = 30.0
"""How old (or how far ahead, clocks differing) a control message may be: older ones are
refused, so a message read off the channel cannot be replayed later."""


class ControlSigner:
    """Seals the control messages runners send one another, and opens only sealed ones.

    Any database role may NOTIFY on any channel (and LISTEN to it): a message counts only
    if it carries an HMAC under a key every serving process of this deployment derives
    from its JWT secret (no database role can read it), names the runner it is for, is
    fresh (``CONTROL_FRESH_SECONDS``) and has not been seen before.
    """

    def __init__(self, secret: str, *, clock: Callable[[], float] = time.time) -> None:
        self._key = hmac.new(secret.encode(), b"llmo runner control v1", hashlib.sha256).digest()
        self._clock = clock
        self._seen: dict[str, float] = {}

    def seal(self, runner_id: int, message: dict[str, Any]) -> str:
        body = json.dumps(
            {**message, "to": runner_id, "ts": self._clock(), "nonce": uuid.uuid4().hex},
            separators=(",", ":"),
        )
        return self._mac(body) + "." + body

    def open(self, runner_id: int, payload: str) -> dict[str, Any]:
        """The message, or ``ValueError`` saying (without its content) why it is refused."""
        mac, _, body = payload.partition(".")
        if not body or not hmac.compare_digest(mac.encode(), self._mac(body).encode()):
            raise ValueError("not signed with this deployment's key")
        try:
            message = json.loads(body)
        except Exception:  # signed by us, so never expected: refuse rather than stop
            raise ValueError("not JSON") from None
        if not isinstance(message, dict) or message.get("to") != runner_id:
            raise ValueError("addressed to another runner")
        sent, nonce = message.get("ts"), message.get("nonce")
        now = self._clock()
        if not isinstance(sent, int | float) or abs(now - sent) > CONTROL_FRESH_SECONDS:
            raise ValueError("stale")
        if not isinstance(nonce, str) or nonce in self._seen:
            raise ValueError("replayed")
        self._seen = {n: t for n, t in self._seen.items() if now - t <= CONTROL_FRESH_SECONDS}
        self._seen[nonce] = now
        return message

    def _mac(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()


class RunnerLease:
    """This process's life as a runner: a row, the advisory lock, the LISTEN, one connection.

    Everything here is on that one connection, so nothing competes with the pool; it is
    otherwise idle, waiting for notifications.
    """

    def __init__(
        self,
        conn: psycopg.AsyncConnection[dict[str, Any]],
        runner_id: int,
        signer: ControlSigner | None,
    ) -> None:
        self._conn = conn
        self.runner_id = runner_id
        self._signer = signer

    @classmethod
    async def acquire(
        cls, url: str, *, signer: ControlSigner | None = None, connect_timeout: int = 5
    ) -> RunnerLease:
        """``signer``: what opens the control messages sent here (None: every one is
        refused; a runner without it only claims)."""
        # TCP keepalives: a connection whose server side is gone without a word (a NAT's
        # timeout, a partition) fails within about half a minute even while idle, and the
        # probe (:meth:`messages`) bounds it further. The session timeouts a server or role
        # may set must not close this idle connection: its lock is the runner's life.
        conn = await psycopg.AsyncConnection.connect(
            url,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=connect_timeout,
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        try:
            await conn.execute("SET idle_session_timeout = 0")
            await conn.execute("SET idle_in_transaction_session_timeout = 0")
            cur = await conn.execute(
                "INSERT INTO runners (pid, hostname) VALUES (%s, %s) RETURNING id",
                (os.getpid(), socket.gethostname()),
            )
            row = await cur.fetchone()
            assert row is not None
            runner_id = int(row["id"])
            # A new id, so nobody holds its lock (unless the ids wrapped around to a runner
            # alive for two billion starts): the try only guards against that.
            cur = await conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s) AS locked", (RUNNER_LOCK_CLASS, runner_id)
            )
            locked = await cur.fetchone()
            if not locked or not locked["locked"]:
                raise RuntimeError(f"runner id {runner_id} is already held")
            await conn.execute(f'LISTEN "{channel(runner_id)}"')
            await conn.execute(f'LISTEN "{SECRET_WRITTEN_CHANNEL}"')
        except BaseException:
            await conn.close()
            raise
        return cls(conn, runner_id, signer)

    async def messages(
        self,
        *,
        probe_every: float,
        probe_timeout: float,
        stopped: Callable[[], bool] = lambda: False,
    ) -> AsyncIterator[dict[str, Any]]:
        """The control messages sent to this runner, until the connection is closed or lost
        (then ``psycopg.OperationalError``: the lock is gone with it), or until ``stopped()``
        (asked every ``probe_every`` seconds: a stop does not rest on its cancellation alone).

        Every ``probe_every`` seconds the connection is asked whether it still holds the
        lock, and must answer within ``probe_timeout``: a half-open connection (the server
        side closed, nothing told this side) otherwise waits for notifications forever while
        the others count this runner dead."""
        while True:
            async for notify in self._conn.notifies(timeout=probe_every):
                if notify.channel == SECRET_WRITTEN_CHANNEL:
                    yield {"op": "secret_written", "name": notify.payload}
                    continue
                try:
                    if self._signer is None:
                        raise ValueError("this runner takes no control messages")
                    message = self._signer.open(self.runner_id, notify.payload)
                except Exception as exc:  # anyone may NOTIFY: no payload may stop this
                    log.warning(
                        "runner %d: refused a control message from backend %d (%s)",
                        self.runner_id,
                        notify.pid,
                        exc if isinstance(exc, ValueError) else type(exc).__name__,
                    )
                    continue
                yield message
            if stopped():
                return
            await self.probe(probe_timeout)

    async def probe(self, timeout: float) -> None:
        """Raise ``psycopg.OperationalError`` unless this connection still holds the lock."""
        # asyncio.timeout, not wait_for: on Python 3.11 a cancellation that lands as the
        # awaited statement completes is lost inside wait_for, and the listener looping over
        # ``messages`` would outlive the stop that cancelled it (a server's close then waited
        # on it for ever).
        try:
            async with asyncio.timeout(timeout):
                cur = await self._conn.execute(
                    f"SELECT %s::bigint IN ({_LIVE_RUNNERS} AND pid = pg_backend_pid()) AS held",
                    (self.runner_id,),
                )
                row = await cur.fetchone()
        except TimeoutError:
            raise psycopg.OperationalError(
                f"the lease connection did not answer within {timeout:g} s"
            ) from None
        if not row or not row["held"]:
            raise psycopg.OperationalError("the lease connection no longer holds its lock")

    @property
    def closed(self) -> bool:
        return self._conn.closed

    async def close(self) -> None:
        """Stop being a runner: the lock goes with the connection (the row is swept later)."""
        await self._conn.close()


class RunnerRepository:
    """The pooled side: ownership reads, claims and notifications."""

    def __init__(self, db: Database, signer: ControlSigner | None = None) -> None:
        self._db = db
        self._signer = signer

    async def owner(self, execution_id: str) -> Owner | None:
        """Who runs ``execution_id`` and whether that runner is alive; None: no execution."""
        async with self._db.connection() as conn:
            cur = await conn.execute(
                f"SELECT runner_id, runner_id IN ({_LIVE_RUNNERS}) AS alive"
                " FROM executions WHERE id = %s",
                (execution_id,),
            )
            row = await cur.fetchone()
        if row is None:
            return None
        return Owner(row["runner_id"], bool(row["alive"]))

    async def alive(self, runner_id: int) -> bool:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                f"SELECT %s::bigint IN ({_LIVE_RUNNERS}) AS alive", (runner_id,)
            )
            row = await cur.fetchone()
        return bool(row and row["alive"])

    async def claim(self, execution_id: str, runner_id: int, dead_owner: int | None) -> bool:
        """Take ``execution_id`` over from ``dead_owner`` (found dead); False when someone
        else took it first. The owner is compared, not re-judged: a claimer that lost the
        race finds another owner's id in the row and leaves it."""
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "UPDATE executions SET runner_id = %s WHERE id = %s"
                " AND runner_id IS NOT DISTINCT FROM %s"
                f" AND (runner_id IS NULL OR runner_id NOT IN ({_LIVE_RUNNERS}))",
                (runner_id, execution_id, dead_owner),
            )
            return cur.rowcount == 1

    async def claim_orphans(self, runner_id: int) -> list[str]:
        """Take over every unfinished execution whose runner is dead (or that has none).

        The dead runners are named first and the update takes only their executions: two
        runners claiming at once both update the same rows, and the one that waited for the
        other's row lock re-reads the row, finds the winner's id (not one of the dead) and
        leaves it. So each orphan gets exactly one new owner.
        """
        async with self._db.connection() as conn:
            cur = await conn.execute(
                f"WITH live AS MATERIALIZED ({_LIVE_RUNNERS}),"
                " dead AS MATERIALIZED (SELECT DISTINCT runner_id FROM executions"
                "  WHERE status = ANY(%(unfinished)s) AND runner_id IS NOT NULL"
                "  AND runner_id NOT IN (SELECT id FROM live))"
                " UPDATE executions SET runner_id = %(me)s"
                " WHERE status = ANY(%(unfinished)s)"
                " AND (runner_id IS NULL OR runner_id IN (SELECT runner_id FROM dead))"
                " RETURNING id",
                {"unfinished": _UNFINISHED, "me": runner_id},
            )
            return [row["id"] for row in await cur.fetchall()]

    async def first_live(self) -> int | None:
        """The lowest id among the live runners: the one that does what only one should."""
        async with self._db.connection() as conn:
            cur = await conn.execute(f"SELECT min(id) AS id FROM ({_LIVE_RUNNERS}) live")
            row = await cur.fetchone()
        return None if row is None or row["id"] is None else int(row["id"])

    async def sweep(self) -> None:
        """Forget the rows of dead runners (their executions keep the bare id)."""
        async with self._db.connection() as conn:
            await conn.execute(f"DELETE FROM runners WHERE id NOT IN ({_LIVE_RUNNERS})")

    async def notify(self, runner_id: int, message: dict[str, Any]) -> None:
        if self._signer is None:
            raise RuntimeError("control messages need the deployment's signer")
        async with self._db.connection() as conn:
            await conn.execute(
                "SELECT pg_notify(%s, %s)",
                (channel(runner_id), self._signer.seal(runner_id, message)),
            )


def connection_limit(url: str) -> tuple[int, int]:
    """``(max_connections, reserved)`` of the server at ``url``: what ordinary roles may open
    is the difference (``reserved_connections`` exists from PostgreSQL 16 on)."""
    with psycopg.connect(url, connect_timeout=10) as conn:
        row = conn.execute(
            "SELECT current_setting('max_connections')::int,"
            " current_setting('superuser_reserved_connections')::int"
            " + COALESCE(current_setting('reserved_connections', true)::int, 0)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])
