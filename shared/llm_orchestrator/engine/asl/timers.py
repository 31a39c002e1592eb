"""Time for the engine: the real timers, and virtual ones so tests never sleep.

Named *timers*, not *clock*: ``llm_orchestrator.clock`` is the wall clock (UTC ``now``);
these are monotonic time, sleeps and scheduled callbacks, which only the interpreter uses.

The interpreter only ever reads time through a :class:`Timers`: ``sleep`` for retry backoff,
``call_at`` for deadlines (task and execution ``TimeoutSeconds``). Keeping the two apart lets
:class:`FakeTimers` record backoff delays without the timeouts' timers mixed in.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class TimerHandle(Protocol):
    """A scheduled callback that can be called off (``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> None: ...


class Timers(Protocol):
    """Monotonic seconds, sleeping, and callbacks at a point in time."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` in the event loop once ``now() >= when``."""
        ...


class SystemTimers:
    """Real monotonic time, driven by the running event loop."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        # A relative delay, because the loop's own time base need not be time.monotonic().
        return asyncio.get_running_loop().call_later(max(0.0, when - self.now()), callback)


class _FakeTimer:
    __slots__ = ("when", "seq", "callback", "cancelled", "_owner")

    def __init__(
        self, owner: FakeTimers, when: float, seq: int, callback: Callable[[], None]
    ) -> None:
        self._owner = owner
        self.when = when
        self.seq = seq
        self.callback = callback
        self.cancelled = False

    def __lt__(self, other: _FakeTimer) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._owner._forget(self)


class FakeTimers:
    """Virtual time: sleeps and timeouts complete at once in real time, in deadline order.

    With ``autojump`` (the default) the timers behave like trio's autojump clock: while
    timers are pending it lets the event loop turn ``settle_rounds`` times, so that every
    runnable task gets to run, then jumps virtual time to the earliest timer and fires it,
    one timer at a time. So a retry backoff of 30 s returns at once, a hung invoker hits its
    ``TimeoutSeconds`` at once, and an execution timeout of an hour does not fire while the
    test is still busy sending task tokens. The flip side: a test must not wait on real
    time (``asyncio.sleep(0.1)``) while a fake timer is pending, or virtual time will have
    moved on meanwhile. Without ``autojump`` only :meth:`advance` moves time.

    ``sleeps`` lists every ``sleep`` request in order, for asserting backoff delays.
    """

    def __init__(
        self, start: float = 0.0, *, autojump: bool = True, settle_rounds: int = 20
    ) -> None:
        self._now = start
        self._autojump = autojump
        self._settle_rounds = settle_rounds
        self._timers: list[_FakeTimer] = []
        self._seq = itertools.count()
        self._driver: asyncio.Task[None] | None = None
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        wake = asyncio.get_running_loop().create_future()
        timer = self.call_at(self._now + seconds, lambda: _resolve(wake))
        try:
            await wake
        finally:
            timer.cancel()

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        timer = _FakeTimer(self, when, next(self._seq), callback)
        heapq.heappush(self._timers, timer)
        if self._autojump and self._driver is None:
            self._driver = asyncio.get_running_loop().create_task(self._drive())
        return timer

    async def advance(self, seconds: float) -> None:
        """Move virtual time forward by ``seconds``, firing due timers in order."""
        target = self._now + seconds
        while self._timers and self._timers[0].when <= target:
            self._fire_next()
            await asyncio.sleep(0)
        self._now = target
        await asyncio.sleep(0)

    def _forget(self, timer: _FakeTimer) -> None:
        try:
            self._timers.remove(timer)
        except ValueError:
            return
        heapq.heapify(self._timers)

    def _fire_next(self) -> None:
        timer = heapq.heappop(self._timers)
        timer.cancelled = True
        self._now = max(self._now, timer.when)
        timer.callback()

    async def _drive(self) -> None:
        try:
            while self._timers:
                for _ in range(self._settle_rounds):
                    await asyncio.sleep(0)
                    if not self._timers:
                        return
                self._fire_next()
        finally:
            self._driver = None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
