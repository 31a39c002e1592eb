"""The local engine as one runner among several serving processes (``llmo serve --workers``).

Each execution is run by exactly one process: the one that created it (its id is written
with the execution), or the one that took it over after its runner died. A runner is alive
while it holds its advisory lock (``store.runners``); every runner claims the executions of
dead runners when it starts and every ``check_seconds`` after, each orphan by exactly one
claimer, so a worker killed with -9 has its executions resumed by a live (or its restarted)
worker within that bound.

Control requests (cancel, resume, restore) reach whichever worker the client's connection
landed on. They are carried out by the execution's owner, where its run lives, exactly as
with one process: this worker asks the owner over the owner's LISTEN channel and waits for
its reply. An owner that is dead is replaced on the spot: the execution is claimed and the
request carried out here (a resume then starts the run here, once).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from llm_orchestrator.errors import ServiceUnavailable
from llm_orchestrator.executions.lifecycle import Actor
from llm_orchestrator.store.runners import RunnerLease, RunnerRepository

log = logging.getLogger(__name__)

CHECK_SECONDS = 2.0
"""How often a runner looks for executions of dead runners (and retries a lost lease)."""
ANSWER_SECONDS = 10.0
"""The longest a control request waits for the owner's reply (while the owner lives)."""
PROBE_SECONDS = 5.0
"""The longest the lease connection may take to confirm it still holds its lock (asked every
``check_seconds``): a connection that cannot is counted lost."""
_LIVENESS_SLICE_SECONDS = 0.5
"""While waiting for a reply, the owner's lock is looked at this often: a dead owner never
answers, and the request is then carried out here."""
_RECANCEL_SECONDS = 1.0
"""A stopping task that runs on after its cancellation is cancelled again this often."""

HERE = "here"
""":meth:`Ownership.route`'s answer when this process must carry the request out itself."""


class Owned(Protocol):
    """What the engine does for :class:`Ownership`."""

    async def carry_out(self, action: str, execution_id: str, actor: Actor) -> bool:
        """Carry out a control request for an execution this process runs; whether the
        execution was in a status that allowed it."""

    async def resume_orphans(self, execution_ids: list[str]) -> list[str]:
        """Run the executions just claimed; returns those started."""

    async def drop_all_runs(self) -> None:
        """The lease is lost: others may claim every run of this process, so stop them."""


class Ownership:
    def __init__(
        self,
        runners: RunnerRepository,
        acquire: Callable[[], Awaitable[RunnerLease]],
        *,
        stamp: Callable[[int | None], None],
        check_seconds: float = CHECK_SECONDS,
        answer_seconds: float = ANSWER_SECONDS,
        probe_seconds: float = PROBE_SECONDS,
    ) -> None:
        self._runners = runners
        self._acquire = acquire
        self._stamp = stamp
        """Told this process's runner id (None without a lease): the id every execution it
        creates or restores is written with."""
        self._check_seconds = check_seconds
        self._answer_seconds = answer_seconds
        self._probe_seconds = probe_seconds
        self._lease: RunnerLease | None = None
        self._engine: Owned | None = None
        self._listener: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._serving: set[asyncio.Task[None]] = set()
        self._closing = False
        self.on_secret_written: Callable[[str], None] | None = None
        """Told the name of every secret written by any process (its cached value is stale)."""
        self.on_lease_change: Callable[[], None] | None = None
        """Told when a lease is taken or lost: the notices sent in between (secrets written
        meanwhile) never arrive, so every cached secret is suspect."""
        self.lost = False
        """The lease was lost and is not back yet: no run may start here meanwhile (a
        claimer would run it too); the executions created meanwhile are claimed later."""

    @property
    def runner_id(self) -> int | None:
        """This process's runner id; None before :meth:`start` and while the lease is lost."""
        return None if self._lease is None or self.lost else self._lease.runner_id

    async def leads(self) -> bool:
        """Whether this runner is the live one with the lowest id: the one process that
        does the deployment's once-per-round chores (anchoring the audit chain)."""
        me = self.runner_id
        return me is not None and await self._runners.first_live() == me

    @property
    def started(self) -> bool:
        return self._engine is not None

    async def start(self, engine: Owned) -> list[str]:
        """Become a runner, claim and resume the orphans; then keep doing both."""
        self._engine = engine
        await self._take_lease()
        resumed = await self.claim_orphans()
        self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="runner watch")
        return resumed

    async def claim_orphans(self) -> list[str]:
        me = self.runner_id
        if me is None or self._engine is None:
            return []
        claimed = await self._runners.claim_orphans(me)
        if not claimed:
            return []
        return await self._engine.resume_orphans(claimed)

    async def quiesce(self) -> None:
        """Stop claiming and serving requests (the first half of a stop: the runs are
        stopped next, while the lease still keeps the others off them)."""
        self._closing = True
        for task in (self._watcher, self._listener, *self._serving):
            if task is not None:
                await _stopped(task)
        self._watcher = self._listener = None

    async def release(self) -> None:
        """Give up the lease: this process's unfinished executions are orphans now."""
        lease, self._lease = self._lease, None
        self._stamp(None)
        if lease is not None:
            await lease.close()

    # -- control requests ----------------------------------------------------------------

    async def route(self, action: str, execution_id: str, actor: Actor) -> str | bool:
        """:data:`HERE` when this process runs (or has just claimed) the execution, or when
        it does not exist; else the owner's answer: whether the request was allowed."""
        me = self.runner_id
        if me is None:
            if self.lost:
                raise ServiceUnavailable("this worker lost its database lease; retry")
            return HERE
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._answer_seconds
        while True:
            if loop.time() > deadline:
                raise ServiceUnavailable(
                    "the worker running this execution did not answer in time; retry"
                )
            owner = await self._runners.owner(execution_id)
            if owner is None or owner.runner_id == me:
                return HERE
            if not owner.alive:
                if await self._runners.claim(execution_id, me, owner.runner_id):
                    return HERE
                continue  # someone else claimed it first: ask them
            assert owner.runner_id is not None
            answer = await self._ask(owner.runner_id, action, execution_id, actor, deadline)
            if answer is not None and not answer.get("moved"):
                if answer.get("error"):
                    raise ServiceUnavailable(str(answer["error"]))
                return bool(answer.get("found"))

    async def _ask(
        self, owner: int, action: str, execution_id: str, actor: Actor, deadline: float
    ) -> dict[str, Any] | None:
        """The owner's reply; None when the owner died before it replied."""
        if self._lease is None:  # lost between the route's check and here
            raise ServiceUnavailable("this worker lost its database lease; retry")
        loop = asyncio.get_running_loop()
        request = uuid.uuid4().hex
        reply: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._replies[request] = reply
        try:
            await self._runners.notify(
                owner,
                {
                    "op": "control",
                    "action": action,
                    "execution": execution_id,
                    "actor": dataclasses.asdict(actor),
                    "reply_to": self._lease.runner_id,
                    "request": request,
                },
            )
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise ServiceUnavailable(
                        "the worker running this execution did not answer in time; retry"
                    )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(remaining, _LIVENESS_SLICE_SECONDS)):
                        return await asyncio.shield(reply)
                if not await self._runners.alive(owner):
                    return None
        finally:
            self._replies.pop(request, None)

    async def _serve(self, message: dict[str, Any]) -> None:
        """A control request from another worker, for an execution this process runs."""
        answer: dict[str, Any] = {"op": "reply", "request": message.get("request")}
        try:
            assert self._engine is not None
            actor = Actor(**message.get("actor", {}))
            log.info(
                "runner %s: %s of execution %s, asked by runner %s",
                self.runner_id,
                message["action"],
                message["execution"],
                message["reply_to"],
            )
            owner = await self._runners.owner(str(message["execution"]))
            if owner is not None and owner.runner_id != self.runner_id:
                # Taken over meanwhile (restored by another worker): ask the new owner.
                answer["moved"] = True
            else:
                answer["found"] = await self._engine.carry_out(
                    str(message["action"]), str(message["execution"]), actor
                )
        except Exception as exc:
            log.exception("control request %s failed", message.get("action"))
            answer["error"] = (
                exc.message if isinstance(exc, ServiceUnavailable) else "the request failed"
            )
        with contextlib.suppress(Exception):
            await self._runners.notify(int(message["reply_to"]), answer)

    def _dispatch(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "secret_written":
            if self.on_secret_written is not None:
                self.on_secret_written(str(message.get("name")))
        elif op == "reply":
            request = message.get("request")
            reply = self._replies.get(request) if isinstance(request, str) else None
            if reply is not None and not reply.done():
                reply.set_result(message)
        elif op == "control":
            if not _well_formed(message):
                log.warning("runner %s: refused a malformed control request", self.runner_id)
                return
            task = asyncio.get_running_loop().create_task(self._serve(message))
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)

    # -- the lease -----------------------------------------------------------------------

    async def _take_lease(self) -> None:
        lease = await self._acquire()
        self._lease = lease
        self._lease_changed()
        self._stamp(lease.runner_id)
        self.lost = False
        self._listener = asyncio.get_running_loop().create_task(
            self._listen(lease), name="runner control"
        )
        log.info("runner %d started", lease.runner_id)

    async def _listen(self, lease: RunnerLease) -> None:
        try:
            async for message in lease.messages(
                probe_every=self._check_seconds,
                probe_timeout=self._probe_seconds,
                stopped=lambda: self._closing,
            ):
                try:
                    self._dispatch(message)
                except Exception:  # one bad message must not cost the lease
                    log.exception("runner %d: a control message failed", lease.runner_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            if self._closing:
                return
            log.exception("runner %d lost its database lease", lease.runner_id)
        if self._closing:
            return
        # Without the lock the others count this runner dead and claim its executions: its
        # runs must stop before anyone else can start them again. The lease is cleared only
        # then, so the watcher takes a new one (and claims) only once they have stopped.
        self.lost = True
        self._stamp(None)
        self._lease_changed()
        if self._engine is not None:
            await self._engine.drop_all_runs()
        with contextlib.suppress(Exception):
            await lease.close()
        self._lease = None

    def _lease_changed(self) -> None:
        if self.on_lease_change is not None:
            self.on_lease_change()

    async def _watch(self) -> None:
        while not self._closing:
            await asyncio.sleep(self._check_seconds)
            try:
                if self._lease is None:
                    await self._take_lease()
                await self.claim_orphans()
                await self._runners.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The database may be briefly away; the next pass tries again.
                log.exception("runner check failed")


_ACTIONS = frozenset({"cancel", "resume", "detach"})
_ACTOR_FIELDS = frozenset(field.name for field in dataclasses.fields(Actor))


def _well_formed(message: dict[str, Any]) -> bool:
    """A control request's fields have the types :meth:`Ownership._serve` relies on."""
    actor = message.get("actor")
    reply_to = message.get("reply_to")
    return (
        message.get("action") in _ACTIONS
        and isinstance(message.get("execution"), str)
        and isinstance(message.get("request"), str)
        and isinstance(reply_to, int)
        and not isinstance(reply_to, bool)
        and isinstance(actor, dict)
        and set(actor) <= _ACTOR_FIELDS
        and all(value is None or isinstance(value, str) for value in actor.values())
    )


async def _stopped(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for its end, cancelling again each second it runs on: a
    cancellation can be lost below (on Python 3.11, one that lands as an inner
    ``asyncio.wait_for`` completes), and a stop must not wait for ever on the one it sent."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=_RECANCEL_SECONDS)
    if not task.cancelled():
        task.exception()  # retrieved: a task that failed as it stopped is not logged as lost
