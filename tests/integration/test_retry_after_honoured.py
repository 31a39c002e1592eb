"""A provider's ``Retry-After`` is honoured end to end (issue 10, item 6).

Locally, the engine's Retry waits at least that long on its clock: a FakeTimers that only
moves when the test says so, so nothing sleeps and the moment of the retry is exact. On
Step Functions, whose Retry cannot read the header, the step-runner Lambda waits it out
before raising, capped by the time the invocation has left.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_orchestrator.config import Settings
from llm_orchestrator.engine.asl import FakeTimers
from llm_orchestrator.runtime import Runtime, build_runtime
from llm_orchestrator.step_runner_lambda import make_step_runner_handler
from tests.fakes.cohere_server import FakeCohere
from tests.integration.conftest import JWT_SECRET
from tests.support import FakeLambdaContext, admin_principal, stored_execution

KEY = "co-retry-after-test"


@pytest.fixture
def fake() -> Iterator[FakeCohere]:
    with FakeCohere.start(api_key=KEY) as server:
        yield server


@pytest.fixture
def settings(database_url: str, data_dir: Path) -> Settings:
    return Settings(database_url=database_url, data_dir=data_dir, jwt_secret=JWT_SECRET)


@pytest.fixture
async def runtime(settings: Settings, fake: FakeCohere) -> AsyncIterator[Runtime]:
    built = build_runtime(settings, environ={"CO_API_KEY": KEY, "CO_API_URL": fake.base_url})
    yield built
    await built.close()


def chat_step(**extra: Any) -> dict[str, Any]:
    return {
        "id": "a",
        "type": "llm",
        "provider": "cohere",
        "model": "command-test",
        "prompt": "hi {{x}}",
        "output": ["out"],
        "retry": {"max_attempts": 3, "backoff_seconds": 1, "backoff_rate": 1.0},
        **extra,
    }


async def wait_until(predicate: Any, *, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_the_local_engine_does_not_retry_before_the_retry_after(
    settings: Settings, fake: FakeCohere
) -> None:
    clock = FakeTimers(autojump=False)
    runtime = build_runtime(
        settings,
        environ={"CO_API_KEY": KEY, "CO_API_URL": fake.base_url},
        engine_timers=clock,
    )
    engine = runtime.engine
    service = runtime.executions
    admin = await admin_principal(runtime, "retry-admin", "retry-admin-password")
    workflow = await runtime.workflows.create(admin, {"name": "w", "steps": [chat_step()]})
    fake.fail_next(429, retry_after=5)

    record = await service.execute(admin, str(workflow.record.id), {"x": "there"})
    try:
        # The engine has taken the 429 and asked its clock for the wait before the retry.
        await wait_until(lambda: clock.sleeps)
        assert clock.sleeps == [5.0]  # not the retry policy's 0..1 s backoff
        await clock.advance(4.9)
        await asyncio.sleep(0.2)
        assert [r.status for r in fake.requests_to("/v2/chat")] == [429]
        await clock.advance(0.1)
        state = await service.wait(record)
    finally:
        await engine.close()
        await runtime.close()

    assert state.record.status == "completed", state.record
    assert [r.status for r in fake.requests_to("/v2/chat")] == [429, 200]


def seed(settings: Settings, definition: dict[str, Any]) -> str:
    async def go() -> str:
        runtime = build_runtime(settings, environ={})
        try:
            admin = await admin_principal(runtime, "retry-admin", "retry-admin-password")
            return await stored_execution(runtime, admin.user_id, definition, timeout_seconds=600)
        finally:
            await runtime.close()

    return asyncio.run(go())


class LambdaContext(FakeLambdaContext):
    """A context whose invocation has ``remaining`` seconds left."""

    def __init__(self, remaining: float) -> None:
        super().__init__()
        self.remaining = remaining

    def get_remaining_time_in_millis(self) -> int:
        return int(self.remaining * 1000)


class NoTokens:
    def send_task_success(self, token: str, output: Any = None) -> None:
        raise AssertionError("no token expected")

    def send_task_failure(self, token: str, error: str, cause: str = "") -> None:
        raise AssertionError("no token expected")


def invoke_rate_limited(
    settings: Settings,
    fake: FakeCohere,
    *,
    retry_after: float,
    attempt: int = 0,
    remaining: float = 900.0,
    step: dict[str, Any] | None = None,
) -> list[float]:
    """One step-runner Lambda invocation that meets a 429; returns what it slept."""
    execution_id = seed(settings, {"name": "w", "steps": [step or chat_step()]})
    environ = {"CO_API_KEY": KEY, "CO_API_URL": fake.base_url}
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    handler = make_step_runner_handler(
        lambda: build_runtime(settings, environ=environ), NoTokens(), sleep
    )
    fake.fail_next(429, retry_after=retry_after)
    payload = {"action": "run", "execution_id": execution_id, "step_id": "a", "attempt": attempt}
    try:
        with pytest.raises(Exception) as caught:
            handler(payload, LambdaContext(remaining))
    finally:
        handler.close()
    # Raised unchanged, so Lambda names it and the state machine's Retry matches it.
    assert type(caught.value).__name__ == "ProviderRateLimited"
    return slept


def test_the_step_runner_lambda_waits_out_the_retry_after_before_raising(
    settings: Settings, fake: FakeCohere
) -> None:
    assert invoke_rate_limited(settings, fake, retry_after=5) == [5.0]


def test_the_lambda_wait_is_capped_by_the_invocation_time_left(
    settings: Settings, fake: FakeCohere
) -> None:
    slept = invoke_rate_limited(settings, fake, retry_after=120, remaining=30)

    assert slept == [29.0]  # the 30 s the invocation has left, less the margin


def test_the_lambda_wait_is_capped_by_the_steps_timeout(
    settings: Settings, fake: FakeCohere
) -> None:
    slept = invoke_rate_limited(settings, fake, retry_after=120, step=chat_step(timeout_seconds=10))

    # At most the step's 10 s less the margin, less what the attempt already took (the
    # SDK's first import and the call itself, which a loaded machine makes slower).
    assert len(slept) == 1 and 0.0 < slept[0] <= 9.0


def test_the_lambda_does_not_wait_when_no_retry_follows(
    settings: Settings, fake: FakeCohere
) -> None:
    # attempt 2 of a 3-attempt policy is the last: the Catch comes next, not a retry.
    assert invoke_rate_limited(settings, fake, retry_after=5, attempt=2) == []
