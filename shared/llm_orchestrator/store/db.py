"""The connection pool and the translation of database errors into domain errors.

The pool is opened lazily, on first use inside the running event loop: a Lambda container
pays for it on its first request and reuses it while warm; nothing connects at import time.

Every use of a connection has a deadline, so a hung or dead database never hangs a request:
the wait for a pooled connection is bounded (``pool_timeout``), the server cancels a slow
statement (``statement_timeout``), and a server that does not answer at all (frozen, or a
network path that drops packets) is cut off on the client side by a watchdog that shuts the
connection's socket down when the deadline passes. All three surface as
``ServiceUnavailable`` (503). Cancelling the waiting task instead would not do: psycopg
answers a cancellation by sending the server a cancel request and waiting up to 10 s for it.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import os
import select
import socket
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg._queries import PostgresQuery
from psycopg.abc import Transformer as AdaptTransformer
from psycopg.adapt import Transformer
from psycopg.generators import execute
from psycopg.pq import DiagnosticField, ExecStatus, TransactionStatus
from psycopg.rows import dict_row
from psycopg.waiting import READY_R, READY_W, WAIT_R, WAIT_W

from llm_orchestrator.errors import Conflict, NotFound, ServiceUnavailable, ValidationFailed
from llm_orchestrator.store.deadlines import serving_request

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

Connection = psycopg.AsyncConnection[dict[str, Any]]
Row = tuple[Any, ...]
T = TypeVar("T")
U = TypeVar("U")

log = logging.getLogger(__name__)


DEFAULT_STATEMENT_TIMEOUT_SECONDS = 3.0
DEFAULT_POOL_TIMEOUT_SECONDS = 3.0
DEFAULT_CONNECT_TIMEOUT_SECONDS = 2
RETRY_AFTER_SECONDS = 5
"""What a 503 for an unavailable database tells the client to wait before retrying."""
_DRAIN_INTERVAL_SECONDS = 1.0
BACKGROUND_POOL_TIMEOUT_SECONDS = 30.0
BACKGROUND_GRACE_SECONDS = 10.0
"""Work outside a request (the engine running executions) waits longer for a connection
under load, and gives a silent server this much longer before cutting it off; the server
still cancels a statement slower than ``statement_timeout``."""


_CONFIRM_SECONDS = 0.3
"""A connection that looks stuck is looked at again this much later before it is cut off."""
_RECHECK_SECONDS = 0.25


class _Watchdog:
    """Cuts a connection off when the server leaves a query unanswered past the deadline.

    A server only counts as silent if a query is in flight (libpq's ACTIVE) and nothing is
    waiting to be read on the socket, twice, ``_CONFIRM_SECONDS`` apart: an event loop that
    was blocked (a slow import) fires the timer late while the answer already sits in the
    socket, and a connection held idle between statements is not the server's fault.

    It cuts with ``shutdown`` (not ``close``) on a duplicate of the descriptor: the socket
    reads EOF at once, libpq reports the connection lost, psycopg raises
    ``OperationalError`` and the pool discards the connection; the descriptor itself stays
    valid for psycopg to close.
    """

    def __init__(self, conn: Connection, seconds: float) -> None:
        self._conn = conn
        self._loop = asyncio.get_running_loop()
        self._suspect = False
        self.fired = False
        first = max(0.0, seconds - _CONFIRM_SECONDS)
        self._handle = self._loop.call_later(first, self._check)

    def _check(self) -> None:
        try:
            fd = self._conn.pgconn.socket
            waiting = self._conn.pgconn.transaction_status == TransactionStatus.ACTIVE
            answered = bool(select.select([fd], [], [], 0)[0])
        except (OSError, ValueError, psycopg.Error):
            return  # closed meanwhile
        if not waiting or answered:
            self._suspect = False
            self._handle = self._loop.call_later(_RECHECK_SECONDS, self._check)
        elif not self._suspect:
            self._suspect = True
            self._handle = self._loop.call_later(_CONFIRM_SECONDS, self._check)
        else:
            self._sever(fd)

    def _sever(self, fd: int) -> None:
        self.fired = True
        try:
            dup = socket.socket(fileno=os.dup(fd))
        except OSError:
            return
        try:
            dup.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        finally:
            dup.close()

    def cancel(self) -> None:
        self._handle.cancel()


@dataclass(frozen=True, eq=False)
class Read(Generic[T]):
    """A read built without I/O: one ``SELECT`` (named ``%(name)s`` parameters only), its
    parameters, and what its rows (tuples) mean.

    Run on its own (:meth:`Database.fetch`), or carried by the statement that authenticates
    a request (``UserRepository.get_in_session``), so that an authenticated read costs one
    round trip. Two reads with the same :attr:`key` send the same statement with the same
    parameters: the carried answer stands for the one the request would have asked for.
    """

    sql: str
    params: Mapping[str, Any]
    decode: Callable[[list[Row]], T]

    @property
    def key(self) -> tuple[str, tuple[tuple[str, Any], ...]]:
        return self.sql, tuple(self.params.items())

    def lateral(self, where: str = "") -> str:
        """This read as a ``LEFT JOIN LATERAL`` beside the row of another statement: its
        columns follow a ``ridden__`` flag (see :meth:`carried`). ``where`` gates it on that
        row; ``OFFSET 0`` keeps the planner from flattening the subquery, so the gate stays
        a one-time filter and a refused caller's read never runs."""
        return (
            f" LEFT JOIN LATERAL (SELECT TRUE AS ridden__, q.* FROM ({self.sql}) q{where}"
            " OFFSET 0) r ON TRUE"
        )

    def carried(self, rows: Sequence[Row], at: int) -> T:
        """The answer from the rows of a statement this read rode on (:meth:`lateral`), its
        ``ridden__`` flag at column ``at``."""
        return self.decode([row[at + 1 :] for row in rows if row[at]])

    def then(self, use: Callable[[T], U]) -> Read[U]:
        """The same read, its answer passed through ``use``."""
        decode = self.decode
        return Read(self.sql, self.params, lambda rows: use(decode(rows)))


class Database:
    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT_SECONDS,
        pool_timeout: float = DEFAULT_POOL_TIMEOUT_SECONDS,
        connect_timeout: int = DEFAULT_CONNECT_TIMEOUT_SECONDS,
        background_pool_timeout: float = BACKGROUND_POOL_TIMEOUT_SECONDS,
    ) -> None:
        """``statement_timeout``: the longest one use of a connection (its statements) may
        take; ``pool_timeout``: the longest wait for a connection from the pool;
        ``connect_timeout``: the longest a new connection may take (libpq: whole seconds, at
        least 2)."""
        self.url = url
        self._statement_timeout = statement_timeout
        self._pool_timeout = pool_timeout
        self._background_pool_timeout = background_pool_timeout
        self._connect_timeout = max(2, int(connect_timeout))
        self._min_size = min_size
        self._max_size = max_size
        self._pool: AsyncConnectionPool[Connection] | None = None
        self._rows_gate = _Gate(max_size)
        self._lock = asyncio.Lock()
        self._last_drain = 0.0

    async def _get_pool(self) -> AsyncConnectionPool[Connection]:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    pool: AsyncConnectionPool[Connection] = _last_returned_first()(
                        self.url,
                        min_size=self._min_size,
                        max_size=self._max_size,
                        kwargs={
                            "row_factory": dict_row,
                            "autocommit": True,
                            "connect_timeout": self._connect_timeout,
                            "options": (
                                f"-c statement_timeout={int(self._statement_timeout * 1000)}"
                            ),
                        },
                        # The pool retries a failed connection with exponential backoff
                        # until this many seconds have passed, then gives up and lets the
                        # next request start over: after an outage of any length the pool
                        # reconnects within a few seconds of the database's return, not
                        # after a backoff grown to minutes.
                        reconnect_timeout=max(5.0, 2.0 * self._connect_timeout + 1.0),
                        open=False,
                    )
                    # No wait: a database that is down fails the request that needs it
                    # (after ``timeout``), not the first request that happens to open the pool.
                    await pool.open(wait=False)
                    self._pool = pool
        return self._pool

    @asynccontextmanager
    async def connection(self, *, timeout: float | None = None) -> AsyncIterator[Connection]:
        """A pooled autocommit connection; wrap statements in ``conn.transaction()``.

        Serving a request (``request_deadlines``), the pool wait is bounded by
        ``pool_timeout`` and the use by ``statement_timeout``; ``timeout`` tightens both to
        end together ``timeout`` seconds from now (a caller with a smaller budget, like a
        health probe). Background work gets the longer ``BACKGROUND_*`` bounds.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        pool_wait, use_limit = self._bounds(timeout)
        watchdog: _Watchdog | None = None
        # getconn/putconn rather than the pool's ``connection()`` context manager: that one
        # also enters the connection's own context (a lock and a commit check, a no-op on
        # these autocommit connections) and keeps usage statistics nobody reads; every
        # statement of every request paid for both. The pool still rolls back and checks a
        # connection it gets back, and discards a broken one.
        try:
            pool = self._pool or await self._get_pool()
            conn = await pool.getconn(timeout=max(0.01, pool_wait))
            try:
                watchdog = _Watchdog(conn, _use_budget(use_limit, started, timeout, loop))
                try:
                    async with translate_errors():
                        yield conn
                finally:
                    watchdog.cancel()
            finally:
                await pool.putconn(conn)
        except (_pool_timeout(), *_CONFLICTS, psycopg.OperationalError) as exc:
            raise self._unavailable_after(exc, watchdog) from exc

    def _unavailable_after(self, exc: Exception, watchdog: _Watchdog | None) -> ServiceUnavailable:
        """The 503 for a use of a connection that failed with ``exc`` (a pool timeout, a
        lost conflict, a broken or silent connection, a statement past its timeout)."""
        if isinstance(exc, _pool_timeout()):
            return self.no_connection_in_time()
        if isinstance(exc, _CONFLICTS):
            # A deadlock or a serialization failure: PostgreSQL chose this transaction to
            # lose a conflict with another. The connection is fine (no drain), and trying
            # again is the whole remedy.
            return _unavailable(
                "the database aborted the transaction in a conflict with another; retry"
            )
        self._drain_soon()
        if watchdog is not None and watchdog.fired:
            return _unavailable("the database did not answer in time")
        if isinstance(exc, pg_errors.QueryCanceled):
            return _unavailable("a database statement took too long")
        return _unavailable("the database connection failed")

    def _drain_soon(self) -> None:
        """After a lost connection, replace the idle ones too: they most likely lead to the
        same dead or frozen server, and each would cost the next request its deadline."""
        now = time.monotonic()
        if self._pool is None or now - self._last_drain < _DRAIN_INTERVAL_SECONDS:
            return
        self._last_drain = now
        task = asyncio.get_running_loop().create_task(self._pool.drain())
        task.add_done_callback(_log_drain_failure)

    @asynccontextmanager
    async def transaction(self, *, pipelined: bool = False) -> AsyncIterator[Connection]:
        """A transaction on a pooled connection.

        ``pipelined``: in pipeline mode, so statements whose results are not fetched are
        sent without waiting for each answer; a fetch sends what is queued and waits.
        Errors surface at the latest on leaving the block. Not one round trip: psycopg
        syncs on leaving the transaction and again on leaving the pipeline (measured: about
        four waits for a transaction of two writes), so one statement is cheaper where one
        statement can do the work.
        """
        if not pipelined:
            async with self.connection() as conn, conn.transaction():
                yield conn
            return
        async with self.connection() as conn, conn.pipeline(), conn.transaction():
            yield conn

    async def fetch(self, read: Read[T]) -> T:
        """``read`` on its own: one round trip."""
        return read.decode(await self.rows(read.sql, read.params))

    async def rows(
        self, sql: str, params: Mapping[str, Any], *, timeout: float | None = None
    ) -> list[Row]:
        """The rows (tuples) of one autocommit statement with ``%(name)s`` parameters:
        what ``connection()`` and a cursor's ``execute`` + ``fetchall`` give, with the same
        deadlines, errors and values, for less CPU.

        Every authenticated request makes one such statement, and psycopg's cursor and
        the two context managers around it cost as much CPU as the rest of a read. Here
        the statement is prepared once per connection under a name of its own (the
        parameters converted and the rows loaded by psycopg's own adapters, so the values
        are the cursor's), sent, and its result read, on the pooled connection, with the
        same watchdog.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        pool_wait, use_limit = self._bounds(timeout)
        watchdog: _Watchdog | None = None
        gate = self._rows_gate
        try:
            pool = self._pool or await self._get_pool()
            await gate.enter(loop, pool_wait)
            try:
                waited = loop.time() - started
                conn = await pool.getconn(timeout=max(0.01, pool_wait - waited))
                try:
                    watchdog = _Watchdog(conn, _use_budget(use_limit, started, timeout, loop))
                    try:
                        return await _prepared_rows(conn, sql, params)
                    except psycopg.Error as exc:
                        translated = _translated(exc)
                        if translated is None:
                            raise
                        raise translated from exc
                    finally:
                        watchdog.cancel()
                finally:
                    await pool.putconn(conn)
            finally:
                gate.leave()
        except (_pool_timeout(), *_CONFLICTS, psycopg.OperationalError) as exc:
            raise self._unavailable_after(exc, watchdog) from exc

    def connection_wait_limit(self) -> float:
        """How long a caller in the current context may wait for a connection (the pool
        wait of ``connection`` and ``rows``)."""
        return self._bounds(None)[0]

    @staticmethod
    def no_connection_in_time() -> ServiceUnavailable:
        """The 503 of a caller whose wait for a connection outlasted its limit."""
        return _unavailable("no database connection became available in time")

    def _bounds(self, timeout: float | None) -> tuple[float, float]:
        """The wait for a connection and the limit on its use (see ``connection``)."""
        if serving_request() or timeout is not None:
            pool_wait, use_limit = self._pool_timeout, self._statement_timeout
        else:
            pool_wait = self._background_pool_timeout
            use_limit = self._statement_timeout + BACKGROUND_GRACE_SECONDS
        if timeout is not None:
            pool_wait = min(pool_wait, timeout)
        return pool_wait, use_limit

    async def ping(self, *, timeout: float | None = None) -> None:
        """One round trip: raises ``ServiceUnavailable`` if the database cannot answer."""
        async with self.connection(timeout=timeout) as conn:
            await conn.execute("SELECT 1")

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


# SQLSTATE class 40 (psycopg does not make its subclasses children of TransactionRollback).
_CONFLICTS = (
    pg_errors.TransactionRollback,
    pg_errors.DeadlockDetected,
    pg_errors.SerializationFailure,
)


def _unavailable(reason: str) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"Service temporarily unavailable: {reason}", retry_after=RETRY_AFTER_SECONDS
    )


def _log_drain_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("could not drain the connection pool: %s", task.exception())


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        translated = _translated(exc)
        if translated is None:
            raise
        raise translated from exc


def _translated(exc: psycopg.Error) -> Exception | None:
    """The domain error a database error stands for; None when it stands for none."""
    if isinstance(exc, pg_errors.UniqueViolation):
        return Conflict(_constraint_message(exc, "already exists"))
    if isinstance(exc, pg_errors.ForeignKeyViolation):
        return NotFound(_constraint_message(exc, "refers to a missing resource"))
    if isinstance(exc, psycopg.DataError):
        # SQLSTATE class 22 (a value out of range or not representable) and psycopg's own
        # refusal of NUL in text: the value came from a request that validation let through.
        # The API refuses such values up front (api/storable.py, the models' bounds); this is
        # the net for a field that slipped past them, a 400 rather than a 500.
        log.warning("database refused a value: %s", exc)
        reason = exc.diag.message_primary or str(exc)
        return ValidationFailed(f"A value cannot be stored: {reason}")
    return None


class _Gate:
    """At most ``size`` statements of :meth:`Database.rows` at the pool at once; the
    others wait here, first come first served, each on a bare future with a timer.

    When more requests are in flight than the pool has connections (32 connections of a
    load test against 10), psycopg's pool queues each waiting client with
    ``asyncio.wait_for``, a task and a timer per wait: a fifth of a ``GET /workflows``'s
    CPU. Waiting here instead, ``getconn`` finds a connection idle, unless another
    path (a transaction, a write) holds it, and then it waits in the pool's own queue as
    before. The time spent here counts against the pool timeout (503 past it)."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def enter(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        turn: asyncio.Future[None] = loop.create_future()
        self._waiters.append(turn)
        timer = loop.call_later(max(0.0, timeout), _expire, turn)
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                self.leave()  # given its turn, then cancelled: the turn passes on
            raise
        finally:
            timer.cancel()

    def leave(self) -> None:
        waiters = self._waiters
        while waiters:
            turn = waiters.popleft()
            if not turn.done():  # not timed out, not cancelled
                turn.set_result(None)
                return
        self._free += 1


def _expire(turn: asyncio.Future[None]) -> None:
    if not turn.done():
        turn.set_exception(_pool_timeout()("no pooled connection came free in time"))


def _use_budget(
    use_limit: float, started: float, timeout: float | None, loop: asyncio.AbstractEventLoop
) -> float:
    """How long a connection got ``started`` (loop time) may be used: the limit, or less
    when a caller's ``timeout`` ends sooner (see ``Database.connection``)."""
    return use_limit if timeout is None else min(use_limit, started + timeout - loop.time())


@functools.cache
def _last_returned_first() -> type[AsyncConnectionPool[Connection]]:
    """psycopg's pool, handing out the connection returned last instead of the one idle
    longest.

    The pool's own order goes round every idle connection in turn: a chain of steps, one
    statement after another, ran each on a different PostgreSQL backend, whose caches
    (plans, catalog, the CPU's) had gone cold since its last turn, and took a fifth of a
    statement's database CPU more than on the backend it had just used. Last in, first out
    keeps a sequence of statements on one warm backend; under load every connection is in
    use anyway. The connections idle longest are the ones the pool closes when it shrinks
    (``max_idle``), as before.
    """
    from psycopg_pool import AsyncConnectionPool

    class Pool(AsyncConnectionPool[Connection]):
        async def _get_ready_connection(self, timeout: float | None) -> Connection | None:
            if not self._pool or (timeout is not None and timeout <= 0.0):
                # None idle (the pool's waiting and its refusals), or past the deadline.
                return await super()._get_ready_connection(timeout)
            conn = self._pool.pop()
            self._nconns_min = min(self._nconns_min, len(self._pool))
            return conn

    return Pool


def _pool_timeout() -> type[Exception]:
    from psycopg_pool import PoolTimeout

    return PoolTimeout


_PREPARED_NAMES_KEPT = 200
"""Statements ``rows`` prepares under names of their own; past that many distinct
statements (a workflow list filtered by name has its own text), the rest run unnamed."""
_statement_names: dict[tuple[bytes, tuple[int, ...]], bytes] = {}


class _Lean:
    """What ``rows`` keeps per connection: the statements prepared on it, and one
    transformer (its dumpers and loaders found once, not per statement: a connection
    serves one statement at a time, so one transformer serves them all in turn)."""

    __slots__ = ("prepared", "transformer")

    def __init__(self, conn: Connection) -> None:
        self.prepared: set[bytes] = set()
        self.transformer = Transformer(conn)


_lean: weakref.WeakKeyDictionary[Connection, _Lean] = weakref.WeakKeyDictionary()


async def _prepared_rows(conn: Connection, sql: str, params: Mapping[str, Any]) -> list[Row]:
    """``sql`` on ``conn`` as a statement prepared on that connection, its rows as tuples.

    The query is converted and the rows loaded by psycopg's adapters (its
    ``PostgresQuery`` and ``Transformer``, as its cursor does), so the values are those a
    cursor gives. A statement is prepared once per connection, keyed like psycopg keys
    its own (the query and its parameters' types); the names (``llmo_<n>``) cannot meet
    psycopg's (``_pg3_<n>``).
    """
    lean = _lean.get(conn)
    if lean is None:
        lean = _lean[conn] = _Lean(conn)
    transformer = lean.transformer
    query = PostgresQuery(transformer)
    query.convert(sql, params)
    pgconn = conn.pgconn
    key = (query.query, query.types)
    name = _statement_names.get(key)
    if name is None and len(_statement_names) < _PREPARED_NAMES_KEPT:
        name = _statement_names[key] = b"llmo_%d" % len(_statement_names)
    if name is None:
        pgconn.send_query_params(
            query.query, query.params, param_types=query.types, param_formats=query.formats
        )
        return _loaded(transformer, await _wait(pgconn), conn)
    prepared = lean.prepared
    for attempt in (1, 2):
        if name not in prepared:
            pgconn.send_prepare(name, query.query, param_types=query.types)
            _result(await _wait(pgconn), conn)
            prepared.add(name)
        pgconn.send_query_prepared(name, query.params, param_formats=query.formats)
        results = await _wait(pgconn)
        if attempt == 1 and _statement_missing(results):
            # The server forgot it (a DEALLOCATE ALL or DISCARD ALL on this connection;
            # psycopg sends one after a rollback when it holds statements of its own):
            # prepare it again. Only this one is known to be gone: one prepared since the
            # server forgot stays known, or preparing it again would fail as a duplicate;
            # each other forgotten one is found out, like this one, when next used.
            prepared.discard(name)
            continue
        break
    return _loaded(transformer, results, conn)


async def _wait(pgconn: Any) -> list[Any]:
    """The results of the statement just sent on ``pgconn`` (psycopg's ``execute``
    generator, driven from the event loop as ``AsyncConnection.wait`` drives it, without
    its periodic timer: the watchdog bounds the wait). A task cancelled meanwhile leaves
    the connection busy, and the pool discards it when it comes back."""
    gen = execute(pgconn)
    try:
        state = next(gen)
        loop = asyncio.get_running_loop()
        fd = pgconn.socket
        while True:
            woken: asyncio.Future[int] = loop.create_future()
            if state & WAIT_R:
                loop.add_reader(fd, _wake, woken, READY_R)
            if state & WAIT_W:
                loop.add_writer(fd, _wake, woken, READY_W)
            try:
                ready = await woken
            finally:
                if state & WAIT_R:
                    loop.remove_reader(fd)
                if state & WAIT_W:
                    loop.remove_writer(fd)
            state = gen.send(ready)
    except StopIteration as done:
        results: list[Any] = done.value
        return results


def _wake(woken: asyncio.Future[int], ready: int) -> None:
    if not woken.done():
        woken.set_result(ready)


def _statement_missing(results: list[Any]) -> bool:
    return any(
        r.status == ExecStatus.FATAL_ERROR and r.error_field(DiagnosticField.SQLSTATE) == b"26000"
        for r in results
    )


def _result(results: list[Any], conn: Connection) -> Any:
    """The one result of a statement; its error raised as psycopg's cursor raises it."""
    for result in results:
        if result.status == ExecStatus.FATAL_ERROR:
            raise pg_errors.error_from_result(result, encoding=conn.pgconn._encoding)
    if len(results) != 1 or results[0].status not in (ExecStatus.TUPLES_OK, ExecStatus.COMMAND_OK):
        raise psycopg.InternalError(f"unexpected results: {[r.status for r in results]}")
    return results[0]


def _loaded(transformer: AdaptTransformer, results: list[Any], conn: Connection) -> list[Row]:
    result = _result(results, conn)
    transformer.set_pgresult(result)
    return transformer.load_rows(0, result.ntuples, tuple)


def _constraint_message(exc: psycopg.Error, what: str) -> str:
    constraint = exc.diag.constraint_name or "resource"
    return f"{constraint.replace('_', ' ')} {what}"


def owner_clause(owner_id: str | None) -> tuple[str, tuple[Any, ...]]:
    """``owner_id = %s`` for a non-admin caller; no restriction when ``owner_id`` is None."""
    return ("TRUE", ()) if owner_id is None else ("owner_id = %s", (owner_id,))


async def fetch_page(
    conn: Connection,
    *,
    source: str,
    where: str = "TRUE",
    params: tuple[Any, ...] = (),
    order_by: str,
    limit: int,
    offset: int,
    columns: str = "*",
) -> tuple[list[dict[str, Any]], int]:
    """One page of rows plus the total that matches ``where``.

    ``source``, ``where``, ``order_by`` and ``columns`` are SQL fragments written by the
    repositories (never user text); every user value travels in ``params``.
    """
    # One round trip: the total rides on every row of the page. Only a page past the end
    # (no rows to carry it) needs a count of its own.
    cur = await conn.execute(
        f"SELECT {columns}, count(*) OVER () AS page_total__ FROM {source} WHERE {where}"
        f" ORDER BY {order_by} LIMIT %s OFFSET %s",
        (*params, limit, offset),
    )
    rows = await cur.fetchall()
    if rows:
        total = int(rows[0]["page_total__"])
        for row in rows:
            del row["page_total__"]
        return rows, total
    if offset == 0:
        return rows, 0
    cur = await conn.execute(f"SELECT count(*) AS total FROM {source} WHERE {where}", params)
    count_row = await cur.fetchone()
    return rows, int(count_row["total"]) if count_row else 0
