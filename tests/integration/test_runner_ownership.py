"""Two serving processes' runtimes on one database, in this process (what ``llmo serve
--workers 2`` runs, each worker a runtime of its own): runs stay with their owner, control
requests reach it from the other one, and a runner that loses its lease gives its runs up.

``test_serve_workers`` does the same with real worker processes; here each runtime's engine
can be looked at directly (how many runs it holds), and a lease can be cut on purpose.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import psycopg

from llm_orchestrator.config import Settings
from llm_orchestrator.server import LocalServer
from llm_orchestrator.store.runners import RUNNER_LOCK_CLASS, RunnerLease, RunnerRepository
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, Session, serving
from tests.integration.execution_support import (
    launch_held,
    llm_step,
    wait_for,
    wait_held,
    wait_parked,
    wait_until,
)

CHAT = "/v1/chat/completions"
STEPS = [
    llm_step("a", "a {{x}}", "out_a"),
    llm_step("b", "b {{out_a}}", "out_b", depends_on=["a"]),
]


@asynccontextmanager
async def client_of(server: LocalServer) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=server.app, client=("203.0.113.7", 4242))
    async with httpx.AsyncClient(transport=transport, base_url="http://test/api/v1") as http:
        yield http


async def admin_of(http: httpx.AsyncClient) -> Session:
    response = await http.post(
        "/auth/login", json={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    return Session(body["user_id"], body["access_token"], body["refresh_token"])


def runner_of(database_url: str, execution_id: str) -> int | None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT runner_id FROM executions WHERE id = %s", (execution_id,))
        found = row.fetchone()
    assert found is not None
    return found[0]


def runs(server: LocalServer) -> int:
    count: int = server.runtime.engine.running_count  # type: ignore[attr-defined]
    return count


def lease_of(server: LocalServer) -> int:
    runner: int | None = server.runtime.execution_store.runner_id
    assert runner is not None
    return runner


@asynccontextmanager
async def two_runners(
    settings: Settings, fake: FakeOpenAI
) -> AsyncIterator[tuple[LocalServer, LocalServer]]:
    async with serving(settings, fake) as first, serving(settings, fake) as second:
        assert lease_of(first) != lease_of(second)
        yield first, second


async def test_cancel_through_another_runner_stops_the_owners_run(
    settings: Settings, fake_openai: FakeOpenAI, database_url: str
) -> None:
    async with (
        two_runners(settings, fake_openai) as (owner, other),
        client_of(owner) as owner_http,
        client_of(other) as other_http,
    ):
        session = await admin_of(owner_http)
        workflow_id, execution_id = await launch_held(
            owner_http, session, fake_openai, STEPS, {"x": "1"}
        )
        assert runner_of(database_url, execution_id) == lease_of(owner)
        assert runs(owner) == 1

        cancelled = await other_http.post(
            f"/workflows/{workflow_id}/cancel",
            headers=session.headers,
            params={"executionId": execution_id},
        )
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        # The owner's run (in the middle of its provider call) is stopped, and no run was
        # started where the cancel arrived.
        await wait_until(lambda: runs(owner) == 0)
        assert runs(other) == 0
        fake_openai.release()
        prompts = [r.body["messages"][0]["content"] for r in fake_openai.requests_to(CHAT)]
        # The held call may be recorded or not (its client went away); nothing came after.
        assert set(prompts) <= {"a 1"}, "a step ran after the cancel"


async def test_resume_through_another_runner_releases_the_owners_parked_run(
    settings: Settings, fake_openai: FakeOpenAI, database_url: str
) -> None:
    async with (
        two_runners(settings, fake_openai) as (owner, other),
        client_of(owner) as owner_http,
        client_of(other) as other_http,
    ):
        session = await admin_of(owner_http)
        workflow_id, execution_id = await launch_held(
            owner_http, session, fake_openai, STEPS, {"x": "2"}
        )
        query = {"executionId": execution_id}
        paused = await other_http.post(
            f"/workflows/{workflow_id}/pause", headers=session.headers, params=query
        )
        assert paused.status_code == 200, paused.text
        fake_openai.release()
        await wait_parked(owner, execution_id, "b")

        resumed = await other_http.post(
            f"/workflows/{workflow_id}/resume", headers=session.headers, params=query
        )
        assert resumed.status_code == 200, resumed.text
        assert runs(other) == 0, "the resume started a second run where it arrived"
        body = await wait_for(other_http, session, workflow_id, execution_id)
        assert body["status"] == "completed"
        assert body["context"]["outputs"]["out_b"] == "echo: b echo: a 2"
        assert runner_of(database_url, execution_id) == lease_of(owner)
        prompts = [r.body["messages"][0]["content"] for r in fake_openai.requests_to(CHAT)]
        assert sorted(prompts) == ["a 2", "b echo: a 2"]


async def test_a_runner_that_loses_its_lease_gives_its_runs_to_a_live_one(
    settings: Settings, fake_openai: FakeOpenAI, database_url: str
) -> None:
    async with (
        two_runners(settings, fake_openai) as (first, second),
        client_of(first) as http,
    ):
        session = await admin_of(http)
        workflow_id, execution_id = await launch_held(http, session, fake_openai, STEPS, {"x": "3"})
        lost = lease_of(first)
        with psycopg.connect(database_url, autocommit=True) as conn:
            # The lease's connection dies (as when its server-side backend is killed).
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                " AND classid = %s AND objid = %s AND objsubid = 2",
                (RUNNER_LOCK_CLASS, lost),
            )
        # Its run stops at once (another runner may claim it now) and the execution is
        # taken over: by the other runner, or by this one under a new lease.
        await wait_until(lambda: runs(first) == 0 or runner_of(database_url, execution_id) != lost)
        await wait_until(lambda: runner_of(database_url, execution_id) != lost, timeout=60)
        fake_openai.release()
        body = await wait_for(http, session, workflow_id, execution_id, timeout=60)
        assert body["status"] == "completed"
        assert body["context"]["outputs"]["out_b"] == "echo: b echo: a 3"
        assert runner_of(database_url, execution_id) in {lease_of(first), lease_of(second)}
        assert lease_of(first) != lost


async def test_orphans_are_claimed_once_by_runners_claiming_at_the_same_time(
    settings: Settings, fake_openai: FakeOpenAI, database_url: str
) -> None:
    async with serving(settings, fake_openai) as gone, client_of(gone) as http:
        session = await admin_of(http)
        workflow_id, first = await launch_held(http, session, fake_openai, STEPS, {"x": "0"})
        ids = [first]
        for n in range(1, 12):
            started = await http.post(
                f"/workflows/{workflow_id}/execute",
                headers=session.headers,
                json={"inputs": {"x": str(n)}},
            )
            ids.append(started.json()["execution_id"])
        await wait_held(fake_openai, len(ids))
    # Its server stopped: its runs were dropped and its lease released, so all are orphans
    # (the fake still holds every call, so none of them ends meanwhile).
    async with serving(settings, fake_openai) as live:
        # That start claimed them all; give them back to a dead runner and race two claims.
        await live.runtime.engine.close()
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("UPDATE executions SET runner_id = -1 WHERE id = ANY(%s)", (ids,))
        repository = RunnerRepository(live.runtime.db)
        # Three live runners (each holds its lock), claiming at once.
        leases = [await RunnerLease.acquire(database_url) for _ in range(3)]
        try:
            claimed = await asyncio.gather(
                *(repository.claim_orphans(lease.runner_id) for lease in leases)
            )
        finally:
            for lease in leases:
                await lease.close()
    fake_openai.release()
    everything = [execution_id for one in claimed for execution_id in one]
    assert sorted(everything) == sorted(ids), "an orphan was claimed twice or not at all"


async def test_resume_of_an_execution_whose_owner_is_gone_runs_it_where_it_arrived(
    settings: Settings, fake_openai: FakeOpenAI, database_url: str
) -> None:
    async with serving(settings, fake_openai) as other, client_of(other) as other_http:
        session = await admin_of(other_http)
        async with serving(settings, fake_openai) as owner, client_of(owner) as owner_http:
            workflow_id, execution_id = await launch_held(
                owner_http, session, fake_openai, STEPS, {"x": "4"}
            )
            paused = await owner_http.post(
                f"/workflows/{workflow_id}/pause",
                headers=session.headers,
                params={"executionId": execution_id},
            )
            assert paused.status_code == 200, paused.text
            fake_openai.release()
            await wait_parked(owner, execution_id, "b")
            gone = lease_of(owner)
        # The owner has stopped (its parked run with it); paused executions are not
        # recovered, so nobody runs this one until it is resumed.
        assert runner_of(database_url, execution_id) == gone
        resumed = await other_http.post(
            f"/workflows/{workflow_id}/resume",
            headers=session.headers,
            params={"executionId": execution_id},
        )
        assert resumed.status_code == 200, resumed.text
        assert runner_of(database_url, execution_id) == lease_of(other)
        body = await wait_for(other_http, session, workflow_id, execution_id)
        assert body["status"] == "completed"
        prompts = [r.body["messages"][0]["content"] for r in fake_openai.requests_to(CHAT)]
        assert sorted(prompts) == ["a 4", "b echo: a 4"]
