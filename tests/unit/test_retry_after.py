"""A provider's Retry-After is honoured by the local engine's Retry (on a FakeTimers, so
nothing here sleeps): never retried sooner than asked, never past the execution's end."""

from __future__ import annotations

import random

from llm_orchestrator.engine.asl import ExecutionStatus, FakeTimers, HistoryEventType, TaskFailed
from tests.unit.asl_support import FakeStepRunner, execute, provider_retry, workflow


def rate_limited(retry_after: float | None) -> TaskFailed:
    return TaskFailed("ProviderRateLimited", "slow down", retry_after=retry_after)


async def test_a_retry_after_longer_than_the_backoff_is_waited_out() -> None:
    timers = FakeTimers()
    retry = [provider_retry(IntervalSeconds=1, BackoffRate=1, JitterStrategy="FULL")]
    runner = FakeStepRunner({"a": [rate_limited(5)]})

    result = await execute(workflow("a", retry=retry), runner, timers=timers)

    assert result.status is ExecutionStatus.SUCCEEDED
    assert timers.sleeps == [5.0]
    [scheduled] = result.events(HistoryEventType.RETRY_SCHEDULED)
    assert scheduled.delay_seconds == 5.0
    first, second = (e.timestamp for e in result.events(HistoryEventType.TASK_SCHEDULED)[:2])
    assert second - first >= 5.0


async def test_a_backoff_longer_than_the_retry_after_wins() -> None:
    timers = FakeTimers()
    retry = [provider_retry(IntervalSeconds=10, JitterStrategy="NONE")]
    runner = FakeStepRunner({"a": [rate_limited(2)]})

    await execute(workflow("a", retry=retry), runner, timers=timers)

    assert timers.sleeps == [10.0]


async def test_without_a_retry_after_the_jittered_backoff_applies() -> None:
    timers = FakeTimers()
    retry = [provider_retry(IntervalSeconds=3, JitterStrategy="FULL")]
    runner = FakeStepRunner({"a": [rate_limited(None)]})

    await execute(workflow("a", retry=retry), runner, timers=timers, rng=random.Random(42))

    assert timers.sleeps == [random.Random(42).uniform(0.0, 3.0)]


async def test_the_wait_is_capped_by_the_time_the_execution_has_left() -> None:
    timers = FakeTimers()
    retry = [provider_retry(IntervalSeconds=1, JitterStrategy="NONE")]
    runner = FakeStepRunner({"a": [rate_limited(3600)]})

    result = await execute(workflow("a", retry=retry, timeout_seconds=30), runner, timers=timers)

    # Not an hour's wait: the execution ends at its deadline, as it would have anyway.
    assert timers.sleeps == [30.0]
    assert result.status is ExecutionStatus.TIMED_OUT
    assert timers.now() == 30.0


async def test_a_retry_after_on_an_error_no_retrier_matches_is_not_waited_for() -> None:
    timers = FakeTimers()
    runner = FakeStepRunner({"a": [TaskFailed("ProviderAuthError", "no", retry_after=60)]})

    result = await execute(workflow("a"), runner, timers=timers)

    assert result.status is ExecutionStatus.FAILED
    assert timers.sleeps == []
