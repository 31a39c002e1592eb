"""Adversarial tests of the execution state machine: pause / resume / cancel / restore
races, terminal states, timeouts and step-runner idempotency, over HTTP with the real
OpenAI SDK against the fake server.

Every step's prompt starts with its id in capitals and a colon (``"B:{{out_a}}"``), so the
fake's request log says how many provider calls each step made. Every scenario ends with
:func:`check_invariants`.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx
import pytest

from llm_orchestrator.config import Settings
from llm_orchestrator.engine.asl.timers import FakeTimers
from llm_orchestrator.engine.local import LocalEngine
from llm_orchestrator.server import LocalServer
from llm_orchestrator.steps.errors import ExecutionEnded, WorkflowCancelled
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, Session
from tests.integration.execution_support import (
    TERMINAL,
    checkpoints,
    control,
    create_workflow,
    get_status,
    launch,
    llm_step,
    serving,
    start_execution,
    wait_for,
    wait_held,
    wait_step,
    wait_until,
)

pytestmark = pytest.mark.usefixtures("fake_openai")
"""Every test here runs on the fake OpenAI server (conftest's ``server`` points at it)."""


CHAIN = [
    llm_step("a", "A:{{x}}", "out_a"),
    llm_step("b", "B:{{out_a}}", "out_b", depends_on=["a"]),
    llm_step("c", "C:{{out_b}}", "out_c", depends_on=["b"]),
]
# a → (b, c) → d: a level of two one-step branches.
DIAMOND = [
    llm_step("a", "A:{{x}}", "out_a"),
    llm_step("b", "B:{{out_a}}", "out_b", depends_on=["a"]),
    llm_step("c", "C:{{out_a}}", "out_c", depends_on=["a"]),
    llm_step("d", "D:{{out_b}} {{out_c}}", "out_d", depends_on=["b", "c"]),
]
# a → ([b1 → b2], [c]) → d: a Parallel whose first branch is a chain of two steps.
SERIES_PARALLEL = [
    llm_step("a", "A:{{x}}", "out_a"),
    llm_step("b1", "B1:{{out_a}}", "out_b1", depends_on=["a"]),
    llm_step("b2", "B2:{{out_b1}}", "out_b2", depends_on=["b1"]),
    llm_step("c", "C:{{out_a}}", "out_c", depends_on=["a"]),
    llm_step("d", "D:{{out_b2}} {{out_c}}", "out_d", depends_on=["b2", "c"]),
]


class MaxJitter(random.Random):
    """FULL jitter that always draws the longest delay, so a backoff is predictable."""

    def uniform(self, a: float, b: float) -> float:
        return b


class MinJitter(random.Random):
    """FULL jitter that always draws no delay at all."""

    def uniform(self, a: float, b: float) -> float:
        return a


def engine_of(server: LocalServer) -> LocalEngine:
    return cast(LocalEngine, server.runtime.engine)


def hold_first_step(server: LocalServer) -> asyncio.Event:
    """Hold the step runner's first ``run`` until the returned event is set, so a test can
    act before any step has started."""
    runner = engine_of(server).step_runner
    real_run = runner.run
    gate = asyncio.Event()

    async def gated_run(execution_id: str, step_id: str, **options: Any) -> dict[str, Any]:
        await gate.wait()
        return await real_run(execution_id, step_id, **options)

    runner.run = gated_run  # type: ignore[method-assign]
    return gate


def calls(fake: FakeOpenAI) -> Counter[str]:
    """Provider calls per step id, failed ones included."""
    counted: Counter[str] = Counter()
    for request in fake.requests_to("/v1/chat/completions"):
        for message in request.body["messages"]:
            if message["role"] == "user":
                counted[message["content"].split(":", 1)[0].lower()] += 1
    return counted


def step_of(body: Any) -> str:
    messages = body.get("messages", []) if isinstance(body, dict) else []
    users = [m["content"] for m in messages if m.get("role") == "user"]
    return users[-1].split(":", 1)[0].lower() if users else ""


async def restore(
    client: httpx.AsyncClient, session: Session, workflow_id: str, checkpoint_id: str
) -> httpx.Response:
    return await client.post(
        f"/state/{workflow_id}/restore",
        headers=session.headers,
        json={"checkpointId": checkpoint_id},
    )


async def db_rows(server: LocalServer, sql: str, *params: Any) -> list[dict[str, Any]]:
    async with server.runtime.db.connection() as conn:
        cur = await conn.execute(sql, params)
        return list(await cur.fetchall())


async def parked(server: LocalServer, execution_id: str) -> list[str]:
    rows = await db_rows(
        server, "SELECT step_id FROM parked_tasks WHERE execution_id = %s", execution_id
    )
    return [row["step_id"] for row in rows]


async def wait_parked(server: LocalServer, execution_id: str, step_id: str | None) -> None:
    """Until ``step_id`` (any step when None; "" for a Parallel) is parked."""
    for _ in range(1000):
        now_parked = await parked(server, execution_id)
        if step_id in now_parked or (step_id is None and now_parked):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no step parked as {step_id!r}")


async def finish_events(client: httpx.AsyncClient, admin: Session, execution_id: str) -> int:
    response = await client.get(
        "/audit/events",
        headers=admin.headers,
        params={"event_type": "workflow_execution", "resource_id": execution_id, "limit": 100},
    )
    assert response.status_code == 200, response.text
    return sum(1 for e in response.json()["events"] if e["action"] == "finish")


async def settle(server: LocalServer, fake: FakeOpenAI) -> None:
    """No run task left in the engine and no request still inside the fake, so every
    provider call made (even one a cancel abandoned) is in the fake's request log."""
    engine = engine_of(server)
    await wait_until(lambda: engine.running_count == 0, timeout=10)
    await wait_until(lambda: fake.in_flight == 0, timeout=10)


async def check_invariants(
    server: LocalServer,
    fake: FakeOpenAI,
    client: httpx.AsyncClient,
    admin: Session,
    workflow_id: str,
    execution_id: str,
    *,
    finished_runs: int,
) -> dict[str, Any]:
    """What must hold once an execution has ended; returns its final status body."""
    await settle(server, fake)
    engine = engine_of(server)
    assert engine.tokens.pending_count == 0
    body = await get_status(client, admin, workflow_id, execution_id)
    [row] = await db_rows(
        server, "SELECT status, completed_at FROM executions WHERE id = %s", execution_id
    )
    assert body["status"] == row["status"]
    assert body["status"] in TERMINAL
    assert (row["completed_at"] is not None) == (row["status"] in TERMINAL)
    assert body["completed_at"] is not None
    # Each step as GET status shows it is what the database says.
    runs = {
        r["step_id"]: r
        for r in await db_rows(
            server, "SELECT * FROM step_runs WHERE execution_id = %s", execution_id
        )
    }
    for step_id, step in body["steps"].items():
        assert step["status"] == (runs[step_id]["status"] if step_id in runs else "pending")
    assert all(r["status"] != "running" for r in runs.values()), runs
    if body["status"] == "completed":
        assert all(s["status"] == "completed" for s in body["steps"].values()), body
        assert body.get("error") is None
    else:
        assert body.get("error") is not None
    assert await parked(server, execution_id) == []
    # A checkpoint holds only completed steps: each with outputs, with its ancestors.
    definition = {
        s["id"]: s
        for s in (
            await db_rows(server, "SELECT definition FROM executions WHERE id = %s", execution_id)
        )[0]["definition"]["steps"]
    }
    for checkpoint in await db_rows(
        server, "SELECT * FROM checkpoints WHERE execution_id = %s", execution_id
    ):
        steps = checkpoint["snapshot"]["steps"]
        for step_id, outputs in steps.items():
            assert isinstance(outputs, dict) and outputs, checkpoint
            assert set(definition[step_id].get("depends_on", [])) <= set(steps), checkpoint
        if checkpoint["kind"] == "auto":
            assert checkpoint["step_id"] in steps, checkpoint
    assert await finish_events(client, admin, execution_id) == finished_runs
    return body


# -- pause and resume ----------------------------------------------------------------------


async def test_pause_and_resume_fired_together_many_times(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    fake_openai.latency = 0.05
    workflow_id, execution_id = await launch(client, admin, CHAIN, {"x": "1"})

    for _ in range(25):
        answers = await asyncio.gather(
            control(client, admin, "pause", workflow_id, execution_id),
            control(client, admin, "resume", workflow_id, execution_id),
        )
        for response in answers:
            assert response.status_code in (200, 409), response.text
            if response.status_code == 200:  # the answer re-reads: it may have ended since
                assert response.json()["status"] in ("paused", "running", "pending", *TERMINAL)
        await asyncio.sleep(random.uniform(0, 0.02))
    # Whatever the storm left, a paused execution resumes and finishes.
    body = await get_status(client, admin, workflow_id, execution_id)
    if body["status"] == "paused":
        assert (
            await control(client, admin, "resume", workflow_id, execution_id)
        ).status_code == 200
    final = await wait_for(client, admin, workflow_id, execution_id)

    assert final["status"] == "completed", final
    assert calls(fake_openai) == {"a": 1, "b": 1, "c": 1}
    await check_invariants(
        server, fake_openai, client, admin, workflow_id, execution_id, finished_runs=1
    )


async def test_pause_right_after_execute_holds_before_the_first_step(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    gate = hold_first_step(server)
    workflow_id, execution_id = await launch(client, admin, CHAIN, {"x": "1"})

    paused = await control(client, admin, "pause", workflow_id, execution_id)

    assert paused.status_code == 200, paused.text
    assert paused.json()["status"] == "paused"
    gate.set()
    await wait_parked(server, execution_id, "a")
    held = await get_status(client, admin, workflow_id, execution_id)
    assert held["status"] == "paused"
    assert held["completed_at"] is None
    assert calls(fake_openai) == {}
    assert (await control(client, admin, "pause", workflow_id, execution_id)).status_code == 409

    assert (await control(client, admin, "resume", workflow_id, execution_id)).status_code == 200
    final = await wait_for(client, admin, workflow_id, execution_id)

    assert final["status"] == "completed"
    assert calls(fake_openai) == {"a": 1, "b": 1, "c": 1}
    await check_invariants(
        server, fake_openai, client, admin, workflow_id, execution_id, finished_runs=1
    )


async def test_a_resume_that_races_ahead_of_the_park_still_releases(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    runner = engine_of(server).step_runner
    real_park = runner.park
    gate = asyncio.Event()
    reached = asyncio.Event()

    async def slow_park(execution_id: str, step_id: str | None, task_token: str) -> Any:
        reached.set()
        await gate.wait()
        return await real_park(execution_id, step_id, task_token)

    runner.park = slow_park  # type: ignore[method-assign]
    workflow_id, execution_id = await launch(client, admin, CHAIN, {"x": "1"})
    assert (await control(client, admin, "pause", workflow_id, execution_id)).status_code == 200
    await asyncio.wait_for(reached.wait(), 5)

    # The step has raised WorkflowPaused but not stored its token yet: resume gets in first.
    resumed = await control(client, admin, "resume", workflow_id, execution_id)
    assert resumed.status_code == 200, resumed.text
    gate.set()
    final = await wait_for(client, admin, workflow_id, execution_id)

    assert final["status"] == "completed"
    assert calls(fake_openai) == {"a": 1, "b": 1, "c": 1}
    await check_invariants(
        server, fake_openai, client, admin, workflow_id, execution_id, finished_runs=1
    )


async def test_pause_during_a_parallel_level_lets_its_steps_finish(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    # b and c call for long enough that a loaded CI machine still sees both in flight.
    fake_openai.latency_of = lambda body: 1.5 if step_of(body) in ("b", "c") else 0.1
    workflow_id, execution_id = await launch(client, admin, DIAMOND, {"x": "1"})
    await wait_step(client, admin, workflow_id, execution_id, "b", "running")
    await wait_step(client, admin, workflow_id, execution_id, "c", "running")

    assert (await control(client, admin, "pause", workflow_id, execution_id)).status_code == 200
    await wait_parked(server, execution_id, "d")

    held = await get_status(client, admin, workflow_id, execution_id)
    assert held["status"] == "paused"
    assert [held["steps"][s]["status"] for s in "abcd"] == ["completed"] * 3 + ["pending"]
    assert (await control(client, admin, "resume", workflow_id, execution_id)).status_code == 200
    final = await wait_for(client, admin, workflow_id, execution_id)

    assert final["status"] == "completed"
    assert calls(fake_openai) == {"a": 1, "b": 1, "c": 1, "d": 1}
    await check_invariants(
        server, fake_openai, client, admin, workflow_id, execution_id, finished_runs=1
    )


async def test_pause_inside_a_parallel_lets_the_other_branch_finish(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    # b1 is quick and b2 then parks, failing its branch while c is still calling the
    # provider. docs/asl.md: steps still running when the Parallel stops finish and
    # checkpoint on their own, and resuming reuses them.
    # b1 long enough to be seen running under load; c longer still, so it is mid-call
    # when b2 parks.
    slow = {"b1": 0.8, "c": 2.0}
    fake_openai.latency_of = lambda body: slow.get(step_of(body), 0.2)
    workflow_id, execution_id = await launch(client, admin, SERIES_PARALLEL, {"x": "1"})
    await wait_step(client, admin, workflow_id, execution_id, "b1", "running")

    assert (await control(client, admin, "pause", workflow_id, execution_id)).status_code == 200
    await wait_parked(server, execution_id, "")
    await wait_step(client, admin, workflow_id, execution_id, "c", "completed", timeout=60)
    assert (await get_status(client, admin, workflow_id, execution_id))["status"] == "paused"

    assert (await control(client, admin, "resume", workflow_id, execution_id)).status_code == 200
    final = await wait_for(client, admin, workflow_id, execution_id)

    assert final["status"] == "completed"
    assert calls(fake_openai) == {"a": 1, "b1": 1, "b2": 1, "c": 1, "d": 1}
    await check_invariants(
        server, fake_openai, client, admin, workflow_id, execution_id, finished_runs=1
    )


async def test_resume_while_a_stopped_branch_step_is_still_calling(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    # As above, but resumed while c is still calling: the re-entered Parallel waits for
    # that call instead of calling the provider for c a second time.
    slow = {"b1": 0.6, "c": 2.0}  # b1 seen running under load; c still calling after
    fake_openai.latency_of = lambda body: slow.get(step_of(body), 0.1)
    workflow_id, execution_id = await launch(client, admin, SERIES_PARALLEL, {"x": "1"})
    await wait_step(client, admin, workflow_id, execution_id, "b1", "running")
    assert (await control(client, admin, "pause", workflow_id, execution_id)).status_code == 200
    await wait_parked(server, execution_id, "")
    assert (await get_status(client, admin, workflow_id, execution_id))["steps"]["c"][
        "status"
    ] == "running"

    assert (await control(client, admin, "resume", workflow_id, execution_id)).status_code == 200
    final = await wait_for(client, admin, workflow_id, execution_id)

    assert final["status"] == "completed"
    assert calls(fake_openai) == {"a": 1, "b1": 1, "b2": 1, "c": 1, "d": 1}
    await check_invariants(
        server, fake_openai, client, admin, workflow_id, execution_id, finished_runs=1
    )


# -- cancel --------------------------------------------------------------------------------


async def test_cancel_while_a_step_is_mid_call(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    # The step awaited as running calls for long enough that a loaded machine sees it.
    fake_openai.latency_of = lambda body: 1.0 if step_of(body) == "b" else 0.3
    workflow_id, execution_id = await launch(client, admin, CHAIN, {"x": "1"})
    await wait_step(client, admin, workflow_id, execution_id, "b", "running")

    cancelled = await control(client, admin, "cancel", workflow_id, execution_id)

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    body = await check_invariants(
        server, fake_openai, client, admin, workflow_id, execution_id, finished_runs=1
    )
    assert body["status"] == "cancelled"
    assert body["error"]["type"] == "WorkflowCancelled"
    assert [body["steps"][s]["status"] for s in "abc"] == ["completed", "failed", "pending"]
    await asyncio.sleep(0.3)
    assert calls(fake_openai) == {"a": 1, "b": 1}
    assert (await get_status(client, admin, workflow_id, execution_id))["steps"]["b"][
        "status"
    ] == "failed"


async def test_cancel_while_paused_and_parked(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    # The step awaited as running calls for long enough that a loaded machine sees it.
    fake_openai.latency_of = lambda body: 1.0 if step_of(body) == "a" else 0.1
    workflow_id, execution_id = await launch(client, admin, CHAIN, {"x": "1"})
    await wait_step(client, admin, workflow_id, execution_id, "a", "running")
    assert (await control(client, admin, "pause", workflow_id, execution_id)).status_code == 200
    await wait_parked(server, execution_id, "b")

    cancelled = await control(client, admin, "cancel", workflow_id, execution_id)

    assert cancelled.status_code == 200
    body = await check_invariants(
        server, fake_openai, client, admin, workflow_id, execution_id, finished_runs=1
    )
    assert body["status"] == "cancelled"
    assert calls(fake_openai) == {"a": 1}
    assert (await control(client, admin, "resume", workflow_id, execution_id)).status_code == 409


async def test_cancel_while_parked_inside_a_parallel(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    # The step awaited as running calls for long enough that a loaded machine sees it.
    fake_openai.latency_of = lambda body: 1.0 if step_of(body) == "a" else 0.2
    workflow_id, execution_id = await launch(client, admin, DIAMOND, {"x": "1"})
    await wait_step(client, admin, workflow_id, execution_id, "a", "running")
    assert (await control(client, admin, "pause", workflow_id, execution_id)).status_code == 200
    await wait_parked(server, execution_id, "")  # the Parallel parks with step_id null

    cancelled = await control(client, admin, "cancel", workflow_id, execution_id)

    assert cancelled.status_code == 200
    body = await check_invariants(
        server, fake_openai, client, admin, workflow_id, execution_id, finished_runs=1
    )
    assert body["status"] == "cancelled"
    assert calls(fake_openai) == {"a": 1}
    assert [body["steps"][s]["status"] for s in "bcd"] == ["pending"] * 3


@asynccontextmanager
async def clocked_server(
    settings: Settings, fake: FakeOpenAI, jitter: random.Random
) -> AsyncIterator[tuple[LocalServer, httpx.AsyncClient, Session, FakeTimers]]:
    """A server whose engine runs on virtual time that only the test moves: timeouts and
    backoffs happen when the test says, never because the machine was slow."""
    clock = FakeTimers(start=1000.0, autojump=False)
    async with serving(settings, fake, engine_timers=clock, jitter=jitter) as local:
        transport = httpx.ASGITransport(app=local.app, client=("203.0.113.7", 4242))
        async with httpx.AsyncClient(transport=transport, base_url="http://t/api/v1") as http:
            login = await http.post(
                "/auth/login", json={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
            )
            body = login.json()
            admin = Session(body["user_id"], body["access_token"], body["refresh_token"])
            yield local, http, admin, clock


async def test_cancel_during_retry_backoff(settings: Settings, fake_openai: FakeOpenAI) -> None:
    slow_retry = {"max_attempts": 3, "backoff_seconds": 20, "backoff_rate": 1.0}
    steps = [
        llm_step("a", "A:{{x}}", "out_a", retry=slow_retry),
        llm_step("b", "B:{{out_a}}", "out_b", depends_on=["a"]),
    ]
    async with clocked_server(settings, fake_openai, MaxJitter()) as (server, client, admin, clock):
        workflow_id = await create_workflow(client, admin, steps)
        for status, retry_after in ((429, 1.0), (503, None)):
            fake_openai.reset()
            clock.sleeps.clear()
            fake_openai.fail_next(status, retry_after=retry_after)
            execution_id = await start_execution(client, admin, workflow_id, {"x": "1"})
            # The step is now in its 20 s backoff, which virtual time never ends.
            await wait_until(lambda: 20.0 in clock.sleeps)

            cancelled = await control(client, admin, "cancel", workflow_id, execution_id)

            assert cancelled.status_code == 200
            body = await check_invariants(
                server, fake_openai, client, admin, workflow_id, execution_id, finished_runs=1
            )
            assert body["status"] == "cancelled"
            assert body["error"]["type"] == "WorkflowCancelled"
            assert calls(fake_openai) == {"a": 1}


async def test_cancel_right_after_execute(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    # Provider calls are held, so the cancel races the run's start and its first step but
    # can never arrive after a run that finished first (a 409, not the race under test).
    fake_openai.hold()
    workflow_id, execution_id = await launch(client, admin, CHAIN, {"x": "1"})

    cancelled = await control(client, admin, "cancel", workflow_id, execution_id)
    fake_openai.release()

    assert cancelled.status_code == 200, cancelled.text
    body = await check_invariants(
        server, fake_openai, client, admin, workflow_id, execution_id, finished_runs=1
    )
    assert body["status"] == "cancelled"
    assert sum(calls(fake_openai).values()) <= 1


# -- restore -------------------------------------------------------------------------------


async def test_restore_from_each_checkpoint_of_a_finished_execution(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    counter = iter(range(1000))
    fake_openai.responder = lambda body: f"r{next(counter)}"
    workflow_id, execution_id = await launch(client, admin, CHAIN, {"x": "1"})
    first = await wait_for(client, admin, workflow_id, execution_id)
    assert first["status"] == "completed"
    original = await checkpoints(client, admin, workflow_id, execution_id)
    assert [c["step_id"] for c in original] == ["a", "b", "c"]

    runs = 1
    for index, checkpoint in enumerate(original):
        before = await get_status(client, admin, workflow_id, execution_id)
        fake_openai.reset()
        fake_openai.responder = lambda body: f"r{next(counter)}"

        restored = await restore(client, admin, workflow_id, checkpoint["id"])

        assert restored.status_code == 200, restored.text
        assert restored.json()["status"] in ("pending", "running")
        final = await wait_for(client, admin, workflow_id, execution_id)
        runs += 1
        assert final["status"] == "completed"
        kept, recomputed = "abc"[: index + 1], "abc"[index + 1 :]
        assert calls(fake_openai) == dict.fromkeys(recomputed, 1)
        for step_id in kept:
            assert final["steps"][step_id]["outputs"] == checkpoint["snapshot"]["steps"][step_id]
        for step_id in recomputed:
            assert final["steps"][step_id]["outputs"] != before["steps"][step_id]["outputs"]
        await check_invariants(
            server, fake_openai, client, admin, workflow_id, execution_id, finished_runs=runs
        )


async def test_restore_brings_back_steps_a_later_restore_had_dropped(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    fake_openai.latency = 0.2
    workflow_id, execution_id = await launch(client, admin, CHAIN, {"x": "1"})
    await wait_for(client, admin, workflow_id, execution_id)
    after_a, _, after_c = await checkpoints(client, admin, workflow_id, execution_id)
    # Back to "after a", then cancelled before b finishes: b and c are gone again.
    assert (await restore(client, admin, workflow_id, after_a["id"])).status_code == 200
    assert (await control(client, admin, "cancel", workflow_id, execution_id)).status_code == 200
    await settle(server, fake_openai)
    fake_openai.reset()

    restored = await restore(client, admin, workflow_id, after_c["id"])

    assert restored.status_code == 200, restored.text
    final = await wait_for(client, admin, workflow_id, execution_id)
    assert final["status"] == "completed"
    assert calls(fake_openai) == {}
    for step_id in "abc":
        assert final["steps"][step_id]["outputs"] == after_c["snapshot"]["steps"][step_id]
    await check_invariants(
        server, fake_openai, client, admin, workflow_id, execution_id, finished_runs=3
    )


async def test_restore_a_failed_execution_after_the_cause_is_fixed(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    # The step awaited as running calls for long enough that a loaded machine sees it.
    fake_openai.latency_of = lambda body: 1.0 if step_of(body) == "a" else 0.2
    workflow_id, execution_id = await launch(client, admin, CHAIN, {"x": "1"})
    await wait_step(client, admin, workflow_id, execution_id, "a", "running")
    assert (await control(client, admin, "pause", workflow_id, execution_id)).status_code == 200
    await wait_parked(server, execution_id, "b")
    fake_openai.fail_next(400)
    assert (await control(client, admin, "resume", workflow_id, execution_id)).status_code == 200
    failed = await wait_for(client, admin, workflow_id, execution_id)
    assert failed["status"] == "failed"
    assert failed["error"] == {
        "type": "ProviderBadRequest",
        "message": failed["error"]["message"],
        "step_id": "b",
    }
    await check_invariants(
        server, fake_openai, client, admin, workflow_id, execution_id, finished_runs=1
    )
    [after_a] = await checkpoints(client, admin, workflow_id, execution_id)
    fake_openai.reset()

    restored = await restore(client, admin, workflow_id, after_a["id"])

    assert restored.status_code == 200, restored.text
    assert restored.json().get("error") is None
    final = await wait_for(client, admin, workflow_id, execution_id)
    assert final["status"] == "completed"
    assert final.get("error") is None
    assert calls(fake_openai) == {"b": 1, "c": 1}
    await check_invariants(
        server, fake_openai, client, admin, workflow_id, execution_id, finished_runs=2
    )


async def test_restore_while_paused(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    # The step awaited as running calls for long enough that a loaded machine sees it.
    fake_openai.latency_of = lambda body: 1.0 if step_of(body) == "b" else 0.1
    workflow_id, execution_id = await launch(client, admin, CHAIN, {"x": "1"})
    await wait_step(client, admin, workflow_id, execution_id, "b", "running")
    assert (await control(client, admin, "pause", workflow_id, execution_id)).status_code == 200
    await wait_parked(server, execution_id, "c")
    after_a = (await checkpoints(client, admin, workflow_id, execution_id))[0]
    fake_openai.reset()

    restored = await restore(client, admin, workflow_id, after_a["id"])

    assert restored.status_code == 200, restored.text
    final = await wait_for(client, admin, workflow_id, execution_id)
    assert final["status"] == "completed"
    assert calls(fake_openai) == {"b": 1, "c": 1}
    # The parked run was replaced, not finished: only the restored run ends.
    await check_invariants(
        server, fake_openai, client, admin, workflow_id, execution_id, finished_runs=1
    )


async def test_concurrent_restores_start_one_run(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    fake_openai.latency = 0.1
    workflow_id, execution_id = await launch(client, admin, CHAIN, {"x": "1"})
    await wait_for(client, admin, workflow_id, execution_id)
    after_a = (await checkpoints(client, admin, workflow_id, execution_id))[0]

    runs = 1
    for _ in range(4):
        await settle(server, fake_openai)
        fake_openai.reset()
        fake_openai.latency = 0.1
        answers = await asyncio.gather(
            *(restore(client, admin, workflow_id, after_a["id"]) for _ in range(6))
        )

        codes = sorted(r.status_code for r in answers)
        assert codes == [200] + [409] * 5, [r.text for r in answers]
        final = await wait_for(client, admin, workflow_id, execution_id, timeout=60)
        runs += 1
        assert final["status"] == "completed"
        assert calls(fake_openai) == {"b": 1, "c": 1}
        await check_invariants(
            server, fake_openai, client, admin, workflow_id, execution_id, finished_runs=runs
        )


async def test_resume_and_restore_fired_together(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    # The step awaited as running calls for long enough that a loaded machine sees it.
    fake_openai.latency_of = lambda body: 1.0 if step_of(body) == "a" else 0.05
    workflow_id, execution_id = await launch(client, admin, CHAIN, {"x": "1"})
    await wait_step(client, admin, workflow_id, execution_id, "a", "running")
    assert (await control(client, admin, "pause", workflow_id, execution_id)).status_code == 200
    await wait_parked(server, execution_id, "b")
    after_a = (await checkpoints(client, admin, workflow_id, execution_id))[0]

    for _ in range(12):
        resumed, restored = await asyncio.gather(
            control(client, admin, "resume", workflow_id, execution_id),
            restore(client, admin, workflow_id, after_a["id"]),
        )

        # Whichever wins, the execution runs on to its end: never left active without a run.
        assert {resumed.status_code, restored.status_code} <= {200, 409}
        assert 200 in (resumed.status_code, restored.status_code)
        final = await wait_for(client, admin, workflow_id, execution_id, timeout=60)
        assert final["status"] == "completed"
        await settle(server, fake_openai)
        # Pause the next run again once it is parked before b.
        assert (await restore(client, admin, workflow_id, after_a["id"])).status_code == 200
        await control(client, admin, "pause", workflow_id, execution_id)
        body = await wait_for(
            client, admin, workflow_id, execution_id, ("paused", *TERMINAL), timeout=60
        )
        if body["status"] != "paused":
            break
        await wait_parked(server, execution_id, None)
    if (await get_status(client, admin, workflow_id, execution_id))["status"] == "paused":
        assert (
            await control(client, admin, "resume", workflow_id, execution_id)
        ).status_code == 200
    await wait_for(client, admin, workflow_id, execution_id)
    await settle(server, fake_openai)
    assert engine_of(server).tokens.pending_count == 0


async def test_restore_then_cancel(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    fake_openai.latency = 0.2
    workflow_id, execution_id = await launch(client, admin, CHAIN, {"x": "1"})
    await wait_for(client, admin, workflow_id, execution_id)
    after_a = (await checkpoints(client, admin, workflow_id, execution_id))[0]
    fake_openai.reset()
    fake_openai.latency = 0.2

    assert (await restore(client, admin, workflow_id, after_a["id"])).status_code == 200
    cancelled = await control(client, admin, "cancel", workflow_id, execution_id)

    assert cancelled.status_code == 200, cancelled.text
    body = await check_invariants(
        server, fake_openai, client, admin, workflow_id, execution_id, finished_runs=2
    )
    assert body["status"] == "cancelled"
    assert calls(fake_openai).get("c", 0) == 0
    assert body["steps"]["a"]["status"] == "completed"


# -- terminal states and timeouts ---------------------------------------------------------


async def assert_final(
    server: LocalServer,
    fake: FakeOpenAI,
    client: httpx.AsyncClient,
    admin: Session,
    workflow_id: str,
    execution_id: str,
    status: str,
) -> None:
    """Nothing but restore moves an ended execution, and a late delivery runs nothing."""
    before = await check_invariants(
        server, fake, client, admin, workflow_id, execution_id, finished_runs=1
    )
    assert before["status"] == status
    made = sum(calls(fake).values())
    for action in ("pause", "resume", "cancel", "pause", "resume"):
        response = await control(client, admin, action, workflow_id, execution_id)
        assert response.status_code == 409, (status, action, response.text)
        assert response.json()["code"] == "conflict"
    runner = engine_of(server).step_runner
    for step_id, step in before["steps"].items():
        # A late or duplicate delivery of any step of an ended execution calls nothing: a
        # completed step answers with its stored result, any other is refused by name.
        delivery = {"action": "run", "execution_id": execution_id, "step_id": step_id}
        if step["status"] == "completed":
            assert (await runner.handle(delivery))["reused"] is True
            continue
        refusal = WorkflowCancelled if status == "cancelled" else ExecutionEnded
        with pytest.raises(refusal):
            await runner.handle(delivery)
    # handle() has returned: nothing it could have started is still going.
    after = await get_status(client, admin, workflow_id, execution_id)
    assert after == before
    assert sum(calls(fake).values()) == made


async def test_terminal_states_are_final(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    workflow_id = await create_workflow(client, admin, CHAIN)

    completed = await start_execution(client, admin, workflow_id, {"x": "1"})
    await wait_for(client, admin, workflow_id, completed)
    await assert_final(server, fake_openai, client, admin, workflow_id, completed, "completed")

    fake_openai.reset()
    fake_openai.fail_next(400)
    failed = await start_execution(client, admin, workflow_id, {"x": "1"})
    await wait_for(client, admin, workflow_id, failed)
    await assert_final(server, fake_openai, client, admin, workflow_id, failed, "failed")

    fake_openai.reset()
    # The step awaited as running calls for long enough that a loaded machine sees it.
    fake_openai.latency_of = lambda body: 1.0 if step_of(body) == "a" else 0.2
    cancelled = await start_execution(client, admin, workflow_id, {"x": "1"})
    await wait_step(client, admin, workflow_id, cancelled, "a", "running")
    await control(client, admin, "cancel", workflow_id, cancelled)
    await assert_final(server, fake_openai, client, admin, workflow_id, cancelled, "cancelled")

    fake_openai.reset()
    # Step a's call is held past the execution's 1 s, so the timeout ends it at any load
    # (three 0.3 s calls once raced it: on a fast path they finished in time).
    fake_openai.hold(lambda body: step_of(body) == "a")
    response = await client.post(
        f"/workflows/{workflow_id}/execute",
        headers=admin.headers,
        json={"inputs": {"x": "1"}, "timeout_override": 1},
    )
    timed_out = response.json()["execution_id"]
    await wait_held(fake_openai)
    await wait_for(client, admin, workflow_id, timed_out)
    fake_openai.release()  # the late answer changes nothing
    await assert_final(server, fake_openai, client, admin, workflow_id, timed_out, "timed_out")


async def test_timeout_override_shorter_than_a_step(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    fake_openai.latency = 1.5
    workflow_id = await create_workflow(client, admin, CHAIN)

    response = await client.post(
        f"/workflows/{workflow_id}/execute",
        headers=admin.headers,
        json={"inputs": {"x": "1"}, "async": False, "timeout_override": 1},
    )

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "timed_out"
    execution_id = response.json()["execution_id"]
    body = await check_invariants(
        server, fake_openai, client, admin, workflow_id, execution_id, finished_runs=1
    )
    assert body["error"]["type"] == "States.Timeout"
    assert [body["steps"][s]["status"] for s in "abc"] == ["failed", "pending", "pending"]
    assert calls(fake_openai) == {"a": 1}


async def test_timeout_while_paused(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    gate = hold_first_step(server)
    workflow_id = await create_workflow(client, admin, CHAIN)
    response = await client.post(
        f"/workflows/{workflow_id}/execute",
        headers=admin.headers,
        json={"inputs": {"x": "1"}, "timeout_override": 1},
    )
    execution_id = response.json()["execution_id"]
    assert (await control(client, admin, "pause", workflow_id, execution_id)).status_code == 200
    gate.set()
    await wait_parked(server, execution_id, "a")

    final = await wait_for(client, admin, workflow_id, execution_id, timeout=60)

    assert final["status"] == "timed_out"
    await check_invariants(
        server, fake_openai, client, admin, workflow_id, execution_id, finished_runs=1
    )
    assert calls(fake_openai) == {}
    assert (await control(client, admin, "resume", workflow_id, execution_id)).status_code == 409


async def test_step_timeout_with_retry(settings: Settings, fake_openai: FakeOpenAI) -> None:
    retry = {"max_attempts": 3, "backoff_seconds": 1, "backoff_rate": 1.0}
    steps = [
        llm_step("a", "A:{{x}}", "out_a", timeout_seconds=10, retry=retry),
        llm_step("b", "B:{{out_a}}", "out_b", depends_on=["a"]),
    ]
    async with clocked_server(settings, fake_openai, MinJitter()) as (server, client, admin, clock):
        workflow_id = await create_workflow(client, admin, steps)

        # A 503 is retried, and each attempt gets the whole timeout again: two attempts of
        # 9 virtual seconds each outlast one 10 s timeout, yet the step completes.
        fake_openai.hold(lambda body: step_of(body) == "a")
        retried = await start_execution(client, admin, workflow_id, {"x": "1"})
        await wait_held(fake_openai)
        await clock.advance(9)
        fake_openai.release(failure=503, hold_more=True)
        await wait_until(lambda: fake_openai.held_count == 1 and calls(fake_openai) == {"a": 1})
        await clock.advance(9)
        fake_openai.release()
        assert (await wait_for(client, admin, workflow_id, retried))["status"] == "completed"
        assert calls(fake_openai) == {"a": 2, "b": 1}
        await check_invariants(
            server, fake_openai, client, admin, workflow_id, retried, finished_runs=1
        )

        # An attempt over the step's timeout fails it with States.Timeout; b never runs.
        fake_openai.reset()
        fake_openai.hold(lambda body: step_of(body) == "a")
        slow = await start_execution(client, admin, workflow_id, {"x": "1"})
        await wait_held(fake_openai)
        await clock.advance(10.5)
        final = await wait_for(client, admin, workflow_id, slow)
        fake_openai.release()  # the provider's late answer changes nothing
        assert final["status"] == "failed"
        assert final["error"]["type"] == "States.Timeout"
        assert final["error"]["step_id"] == "a"
        body = await check_invariants(
            server, fake_openai, client, admin, workflow_id, slow, finished_runs=1
        )
        assert body["steps"]["a"]["status"] == "failed"
        assert calls(fake_openai) == {"a": 1}


# -- idempotency ---------------------------------------------------------------------------


async def test_the_step_runner_twice_for_a_completed_step_calls_nothing(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    workflow_id, execution_id = await launch(client, admin, CHAIN, {"x": "1"})
    await wait_for(client, admin, workflow_id, execution_id)
    runs_before = await db_rows(
        server, "SELECT * FROM step_runs WHERE execution_id = %s ORDER BY step_id", execution_id
    )
    runner = engine_of(server).step_runner

    results = await asyncio.gather(
        *(
            runner.handle({"action": "run", "execution_id": execution_id, "step_id": step_id})
            for step_id in "abcab"
        )
    )

    assert all(result["reused"] for result in results)
    assert calls(fake_openai) == {"a": 1, "b": 1, "c": 1}
    assert runs_before == await db_rows(
        server, "SELECT * FROM step_runs WHERE execution_id = %s ORDER BY step_id", execution_id
    )
    assert len(await checkpoints(client, admin, workflow_id, execution_id)) == 3
    await check_invariants(
        server, fake_openai, client, admin, workflow_id, execution_id, finished_runs=1
    )
