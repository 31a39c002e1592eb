"""Two serving processes' runtimes on one database, in this process (what ``llmo serve
--workers 2`` runs, each worker a runtime of its own): runs stay with their owner, control
requests reach it from the other one, and a runner that loses its lease gives its runs up.

``test_serve_workers`` does the same with real worker processes; here each runtime's engine
can be looked at directly (how many runs it holds), and a lease can be cut on purpose.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from llm_orchestrator.config import Settings
from llm_orchestrator.server import LocalServer
from llm_orchestrator.store.runners import (
    RUNNER_LOCK_CLASS,
    RunnerLease,
    RunnerRepository,
    channel,
)
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


def completed_steps(database_url: str, execution_id: str) -> set[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT step_id FROM step_runs WHERE execution_id = %s AND status = 'completed'",
            (execution_id,),
        ).fetchall()
    return {step for (step,) in rows}


def attempts_of(database_url: str, execution_id: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT step_id, attempts FROM step_runs WHERE execution_id = %s", (execution_id,)
        ).fetchall()
    return dict(rows)


async def test_a_run_whose_execution_was_taken_over_unnoticed_commits_nothing_more(
    settings: Settings, fake_openai: FakeOpenAI, database_url: str
) -> None:
    async with (
        two_runners(settings, fake_openai) as (first, second),
        client_of(first) as http,
    ):
        session = await admin_of(http)
        workflow_id, execution_id = await launch_held(http, session, fake_openai, STEPS, {"x": "5"})
        # What a lease lost without a word leads to (a half-open connection: PostgreSQL
        # dropped the lock, the first runner never heard): another runner claims the
        # execution while the first one's run goes on, its provider call in flight.
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "UPDATE executions SET runner_id = %s WHERE id = %s",
                (lease_of(second), execution_id),
            )
        fake_openai.release()
        # The stale run stops at its commit, writing nothing (as after a kill -9)...
        await wait_until(lambda: runs(first) == 0)
        assert "a" not in completed_steps(database_url, execution_id)
        # ...so the new owner runs the execution once, from where it was.
        assert await second.runtime.engine.resume_orphans([execution_id]) == [execution_id]
        body = await wait_for(http, session, workflow_id, execution_id)
        assert body["status"] == "completed"
        assert body["context"]["outputs"]["out_b"] == "echo: b echo: a 5"
        prompts = [r.body["messages"][0]["content"] for r in fake_openai.requests_to(CHAT)]
        # The call in flight when the execution changed hands is made again (its first
        # result was dropped); no later step was sent twice.
        assert sorted(prompts) == ["a 5", "a 5", "b echo: a 5"]
        assert attempts_of(database_url, execution_id)["b"] == 1
        assert runner_of(database_url, execution_id) == lease_of(second)


async def test_a_lease_whose_connection_stops_answering_is_given_up(
    settings: Settings, fake_openai: FakeOpenAI, database_url: str
) -> None:
    # The lease's backend stops answering while keeping its socket open (SIGSTOP): to the
    # runner this is a half-open connection, which never reports an error by itself.
    async with (
        serving(settings.model_copy(update={"runner_check_seconds": 0.2}), fake_openai) as (runner),
        client_of(runner) as http,
    ):
        session = await admin_of(http)
        workflow_id, execution_id = await launch_held(http, session, fake_openai, STEPS, {"x": "6"})
        stuck = lease_of(runner)
        with psycopg.connect(database_url, autocommit=True) as conn:
            found = conn.execute(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s"
                " AND objid = %s AND objsubid = 2",
                (RUNNER_LOCK_CLASS, stuck),
            ).fetchone()
        assert found is not None
        backend = int(found[0])
        os.kill(backend, signal.SIGSTOP)
        try:
            # The probe gets no answer in time: the lease counts as lost, its runs stop.
            await wait_until(lambda: runs(runner) == 0, timeout=60)
        finally:
            os.kill(backend, signal.SIGCONT)
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (backend,))
        # A new lease claims the execution (its old runner is dead now) and finishes it.
        await wait_until(lambda: runner_of(database_url, execution_id) != stuck, timeout=60)
        fake_openai.release()
        body = await wait_for(http, session, workflow_id, execution_id, timeout=60)
        assert body["status"] == "completed"
        assert lease_of(runner) != stuck


@contextmanager
def unprivileged_role(owner_database_url: str) -> Iterator[str]:
    """A login role granted nothing: any such role may NOTIFY on any channel."""
    role = f"llmo_intruder_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(owner_database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        yield make_conninfo(owner_database_url, user=role)
    finally:
        with psycopg.connect(owner_database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


async def test_control_messages_from_another_database_role_change_nothing(
    settings: Settings,
    fake_openai: FakeOpenAI,
    database_url: str,
    owner_database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="llm_orchestrator.store.runners")
    async with serving(settings, fake_openai) as runner, client_of(runner) as http:
        session = await admin_of(http)
        workflow_id, execution_id = await launch_held(http, session, fake_openai, STEPS, {"x": "7"})
        lease = lease_of(runner)
        forged = {
            "op": "control",
            "action": "cancel",
            "execution": execution_id,
            "actor": {"user_id": "forged-admin"},
            "reply_to": lease,
            "request": "forged",
        }
        payloads = [
            "[" * 5000,  # json.loads recursion
            "{not json",
            json.dumps(forged),
            "0" * 64 + "." + json.dumps({**forged, "to": lease, "ts": time.time(), "nonce": "n"}),
        ]
        with (
            unprivileged_role(owner_database_url) as intruder,
            psycopg.connect(intruder, autocommit=True) as conn,
        ):
            for payload in payloads:
                conn.execute("SELECT pg_notify(%s, %s)", (channel(lease), payload))

        def refused() -> int:
            return sum("refused a control message" in r.getMessage() for r in caplog.records)

        await wait_until(lambda: refused() >= len(payloads))
        assert lease_of(runner) == lease, "a payload cost the runner its lease"
        assert runs(runner) == 1
        fake_openai.release()
        body = await wait_for(http, session, workflow_id, execution_id)
        assert body["status"] == "completed"
        prompts = [r.body["messages"][0]["content"] for r in fake_openai.requests_to(CHAT)]
        assert sorted(prompts) == ["a 7", "b echo: a 7"]
        with psycopg.connect(owner_database_url) as conn:
            actors = conn.execute(
                "SELECT (SELECT count(*) FROM audit_events WHERE user_id = 'forged-admin')"
                " + (SELECT count(*) FROM audit_pending WHERE user_id = 'forged-admin')"
            ).fetchone()
        assert actors == (0,)
        assert "[[[[" not in caplog.text and "forged-admin" not in caplog.text


async def set_secret(http: httpx.AsyncClient, session: Session, key: str, value: str) -> None:
    response = await http.post(
        "/admin/secrets", headers=session.headers, json={"key": key, "value": value}
    )
    assert response.status_code == 200, response.text


async def test_a_secret_written_while_a_runner_is_between_leases_is_not_served_stale(
    settings: Settings, fake_openai: FakeOpenAI, database_url: str
) -> None:
    # The first runner takes its next lease only after a minute: the gap stays open.
    slow = settings.model_copy(update={"runner_check_seconds": 60})
    async with (
        serving(slow, fake_openai) as first,
        serving(settings, fake_openai) as second,
        client_of(first) as first_http,
        client_of(second) as second_http,
    ):
        session = await admin_of(first_http)
        await set_secret(first_http, session, "ANTHROPIC_API_KEY", "sk-ant-old-value")
        assert await first.runtime.secrets.get("ANTHROPIC_API_KEY") == "sk-ant-old-value"
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                " AND classid = %s AND objid = %s AND objsubid = 2",
                (RUNNER_LOCK_CLASS, lease_of(first)),
            )
        await wait_until(lambda: first.runtime.execution_store.runner_id is None)
        # Written through the other worker: its notice cannot reach the first one now.
        await set_secret(second_http, session, "ANTHROPIC_API_KEY", "sk-ant-new-value")
        assert await first.runtime.secrets.get("ANTHROPIC_API_KEY") == "sk-ant-new-value"


async def test_one_runner_of_several_anchors_the_audit_chain_and_another_takes_over(
    settings: Settings, fake_openai: FakeOpenAI
) -> None:
    async with serving(settings, fake_openai) as first:
        async with serving(settings, fake_openai) as second:
            leading = [await first.runtime.engine.leads(), await second.runtime.engine.leads()]  # type: ignore[attr-defined]
            assert leading == [
                lease_of(first) < lease_of(second),
                lease_of(second) < lease_of(first),
            ]
            assert sum(leading) == 1
        # The other one stopped: the one left leads.
        assert await first.runtime.engine.leads()  # type: ignore[attr-defined]


@pytest.mark.slow
async def test_a_server_stops_promptly_wherever_its_stop_falls_against_the_lease_probe(
    settings: Settings,
) -> None:
    """The lease is probed every few milliseconds here, so the stops land on every phase of a
    probe. A stop that cancelled the lease listener once and waited for it never returned
    when the cancellation was lost (Python 3.11's ``wait_for`` loses one that lands as the
    probe's statement completes): a CI run waited on it for over an hour."""
    probing = settings.model_copy(update={"runner_check_seconds": 0.005})
    for attempt in range(60):
        async with serving(probing, environ={}) as local:
            await asyncio.sleep(attempt % 25 * 0.002)
            started = time.monotonic()
            # Past the bound the stop is cut off and returns with the listener still running:
            # the elapsed time tells, not an error.
            async with asyncio.timeout(10):
                await local.runtime.close()
            assert time.monotonic() - started < 5, f"stop {attempt} waited on its listener"
