"""The local scheduler: fires due schedule triggers from inside ``llm serve``.

One asyncio task on the server's loop. Each pass fires what is due, then sleeps until the
next tick in PostgreSQL, at most ``max_sleep`` (so a schedule created meanwhile, or by
another process, is seen within that). Ticks are claimed with a conditional update, so two
servers on one database never fire the same tick. The clock and the sleep are injectable:
tests drive a ``rate(1 minute)`` through its minute without waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime

from llm_orchestrator.triggers.service import Firing, TriggerService

log = logging.getLogger(__name__)

MAX_SLEEP_SECONDS = 1.0


class LocalScheduler:
    def __init__(
        self,
        triggers: TriggerService,
        *,
        clock: Callable[[], datetime],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_sleep: float = MAX_SLEEP_SECONDS,
    ) -> None:
        self._triggers = triggers
        self._now = clock
        self._sleep = sleep
        self._max_sleep = max_sleep
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def tick(self) -> list[Firing]:
        """One pass: fire every schedule due at the clock's now."""
        firings = await self._triggers.fire_due_schedules(self._now())
        for firing in firings:
            if firing.execution_id:
                log.info("trigger %s started %s", firing.trigger_id, firing.execution_id)
            elif firing.error:
                log.warning("trigger %s could not start: %s", firing.trigger_id, firing.error)
        return firings

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="scheduler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            # The flag as well as the cancel: a cancellation that lands inside a database
            # call can be turned into an ordinary error (or lost) by the layers below, and the
            # loop would then carry on firing with nobody left to stop it.
            self._stopping = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self.tick()
                due = await self._triggers.next_due_at()
            except Exception:
                # The database may be briefly away; the next pass tries again.
                log.exception("scheduler pass failed")
                due = None
            wait = self._max_sleep
            if due is not None:
                wait = min(wait, max(0.0, (due - self._now()).total_seconds()))
            await self._sleep(wait)
