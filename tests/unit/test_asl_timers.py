"""FakeTimers runs virtual time in deadline order without sleeping; SystemTimers is real time."""

from __future__ import annotations

import asyncio
import time

from llm_orchestrator.engine.asl.timers import FakeTimers, SystemTimers


async def test_fake_sleeps_return_at_once_and_are_recorded() -> None:
    timers = FakeTimers(start=100.0)
    started = time.perf_counter()

    await timers.sleep(3600)
    await timers.sleep(0.5)

    assert time.perf_counter() - started < 1.0
    assert timers.now() == 3700.5
    assert timers.sleeps == [3600, 0.5]


async def test_concurrent_fake_sleeps_wake_in_deadline_order_on_one_timeline() -> None:
    timers = FakeTimers()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await timers.sleep(seconds)
        woke.append((name, timers.now()))

    await asyncio.gather(sleeper("slow", 30), sleeper("fast", 10), sleeper("mid", 20))

    assert woke == [("fast", 10.0), ("mid", 20.0), ("slow", 30.0)]


async def test_a_cancelled_fake_timer_never_fires() -> None:
    timers = FakeTimers()
    fired: list[str] = []

    handle = timers.call_at(5, lambda: fired.append("cancelled"))
    timers.call_at(10, lambda: fired.append("kept"))
    handle.cancel()
    await timers.sleep(20)

    assert fired == ["kept"]


async def test_without_autojump_only_advance_moves_time() -> None:
    timers = FakeTimers(autojump=False)
    fired: list[float] = []
    timers.call_at(5, lambda: fired.append(timers.now()))
    timers.call_at(8, lambda: fired.append(timers.now()))

    for _ in range(50):
        await asyncio.sleep(0)
    assert fired == []

    await timers.advance(6)
    assert (fired, timers.now()) == ([5.0], 6.0)
    await timers.advance(6)
    assert (fired, timers.now()) == ([5.0, 8.0], 12.0)


async def test_system_clock_calls_back_after_the_real_delay() -> None:
    timers = SystemTimers()
    fired = asyncio.Event()
    started = timers.now()

    timers.call_at(started + 0.05, fired.set)
    await asyncio.wait_for(fired.wait(), timeout=2)

    assert timers.now() - started >= 0.04
