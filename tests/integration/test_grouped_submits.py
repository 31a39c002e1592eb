"""Submits made together: their inserts go to PostgreSQL grouped (``store/executions.py``),
and each submit still gets its own execution, its own ``start`` event in the one chain,
and its own answer, a refused row failing no other."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from llm_orchestrator.errors import Conflict, NotFound
from llm_orchestrator.executions.lifecycle import Actor
from llm_orchestrator.server import LocalServer
from llm_orchestrator.store.deadlines import request_deadlines
from tests.integration.conftest import Session
from tests.integration.execution_support import create_workflow, llm_step, lock_waiters

pytestmark = pytest.mark.usefixtures("fake_openai")

BURST = 24


async def test_a_burst_of_submits_each_gets_its_execution_and_its_start_event(
    client: httpx.AsyncClient, admin: Session, server: LocalServer
) -> None:
    workflow_id = await create_workflow(client, admin, [llm_step("one", "say {{x}}", "y")])

    answers = await asyncio.gather(
        *(
            client.post(
                f"/workflows/{workflow_id}/execute",
                headers=admin.headers,
                json={"inputs": {"x": f"n{n}"}, "async": True},
            )
            for n in range(BURST)
        )
    )

    assert [a.status_code for a in answers] == [202] * BURST, [a.text for a in answers]
    ids = [a.json()["execution_id"] for a in answers]
    assert len(set(ids)) == BURST
    for n, execution_id in enumerate(ids):
        status = await client.get(
            f"/workflows/{workflow_id}/status",
            headers=admin.headers,
            params={"executionId": execution_id},
        )
        assert status.status_code == 200, status.text
        assert status.json()["context"]["inputs"] == {"x": f"n{n}"}
        events = await client.get(
            "/audit/events",
            headers=admin.headers,
            params={"resource_id": execution_id, "event_type": "workflow_execution"},
        )
        assert events.status_code == 200, events.text
        starts = [e for e in events.json()["events"] if e["action"] == "start"]
        assert len(starts) == 1 and starts[0]["details"]["async"] is True
    verified = await client.get("/audit/verify", headers=admin.headers)
    assert verified.json()["valid"] is True, verified.text


async def _create_together(
    server: LocalServer,
    owner_id: str,
    workflows: list[uuid.UUID],
    *,
    requests: bool = True,
    numbers: list[int] | None = None,
) -> list[Any]:
    """One execution of each of ``workflows``, all created at once through the execution
    lifecycle, each by a request as submits create them (``requests``) or in the background
    as a trigger does: the first goes alone, the others while it is in flight. Their
    records, or what each raised. The n-th is ``exec-together-<numbers[n]>`` (n itself by
    default)."""
    lifecycle = server.runtime.lifecycle

    async def create(n: int, workflow_id: uuid.UUID) -> Any:
        with request_deadlines() if requests else contextlib.nullcontext():
            return await lifecycle.create(
                Actor(user_id=owner_id),
                execution_id=f"exec-together-{n if numbers is None else numbers[n]}",
                workflow_id=workflow_id,
                owner_id=owner_id,
                inputs={"x": n},
                definition=DEFINITION,
                state_machine=STATE_MACHINE,
                timeout_seconds=60,
            )

    return await asyncio.gather(
        *(create(n, workflow) for n, workflow in enumerate(workflows)), return_exceptions=True
    )


DEFINITION: dict[str, Any] = {"name": "together", "version": "1", "steps": []}
STATE_MACHINE: dict[str, Any] = {"StartAt": "one", "States": {"one": {"Type": "Succeed"}}}


def _stored(server: LocalServer) -> dict[str, dict[str, Any]]:
    """The executions the tests here created, by id: the transaction that wrote each, its
    inputs and pinned documents, and its ``start`` event in the chain (None if none)."""
    with psycopg.connect(server.database_url, row_factory=dict_row) as conn:
        rows = conn.execute(
            "SELECT x.id, x.xmin::text AS tx, x.inputs, x.definition, x.state_machine,"
            " x.status, e.seq AS event_seq FROM executions x LEFT JOIN audit_events e"
            " ON e.resource_id = x.id AND e.action = 'start'"
            " AND e.event_type = 'workflow_execution'"
            " WHERE x.id LIKE 'exec-together-%'"
        ).fetchall()
    return {row["id"]: row for row in rows}


async def test_executions_created_while_one_is_in_flight_are_written_together(
    client: httpx.AsyncClient, admin: Session, server: LocalServer
) -> None:
    workflow = uuid.UUID(await create_workflow(client, admin, [llm_step("one", "{{x}}", "y")]))

    results = await _create_together(server, admin.user_id, [workflow] * 6)

    assert [r.id for r in results] == [f"exec-together-{n}" for n in range(6)]
    verified = await client.get("/audit/verify", headers=admin.headers)  # links the outbox
    assert verified.json()["valid"] is True, verified.text
    stored = _stored(server)
    assert sorted(stored) == sorted(r.id for r in results)
    # The first alone, at once; the five made meanwhile in one statement after it.
    transactions = [stored[f"exec-together-{n}"]["tx"] for n in range(6)]
    assert transactions[0] not in transactions[1:]
    assert len(set(transactions[1:])) == 1
    for n in range(6):
        row = stored[f"exec-together-{n}"]
        assert row["inputs"] == {"x": n} and row["status"] == "pending"
        assert (row["definition"], row["state_machine"]) == (DEFINITION, STATE_MACHINE)
        assert row["event_seq"] is not None  # its start event, linked into the chain
    # The chain follows the order the submits were made in.
    seqs = [stored[f"exec-together-{n}"]["event_seq"] for n in range(6)]
    assert seqs == sorted(seqs)


async def test_each_insert_of_a_group_keeps_its_own_inputs_documents_and_times(
    client: httpx.AsyncClient, admin: Session, server: LocalServer
) -> None:
    """A group's rows travel as one JSON document: text that JSON and SQL both escape,
    non-ASCII text, nested values, each row's own pinned documents (a workflow updated
    between two submits) and its timestamps come back exactly as each insert had them."""
    workflow = uuid.UUID(await create_workflow(client, admin, [llm_step("one", "{{x}}", "y")]))
    lifecycle = server.runtime.lifecycle
    awkward = ['quote " and \\ backslash', "{braces}, 'single'", "ünïcödé ✓ 😀", "NULL", ""]

    async def create(n: int) -> Any:
        with request_deadlines():
            return await lifecycle.create(
                Actor(user_id=admin.user_id),
                execution_id=f"exec-together-{n}",
                workflow_id=workflow,
                owner_id=admin.user_id,
                inputs={"x": awkward[n], "nested": {"list": [n, 1.5, None, True]}},
                definition={**DEFINITION, "version": str(n % 2)},
                state_machine={**STATE_MACHINE, "Comment": awkward[n]},
                timeout_seconds=60 + n,
            )

    records = await asyncio.gather(*(create(n) for n in range(len(awkward))))

    verified = await client.get("/audit/verify", headers=admin.headers)  # links the outbox
    assert verified.json()["valid"] is True, verified.text
    stored = _stored(server)
    transactions = {stored[r.id]["tx"] for r in records[1:]}
    assert len(transactions) == 1  # all but the first in one statement
    with psycopg.connect(server.database_url, row_factory=dict_row) as conn:
        times = {
            row["id"]: row
            for row in conn.execute(
                "SELECT id, timeout_seconds, created_at, started_at, updated_at"
                " FROM executions WHERE id LIKE 'exec-together-%'"
            ).fetchall()
        }
    for n, record in enumerate(records):
        row = stored[record.id]
        assert row["inputs"] == {"x": awkward[n], "nested": {"list": [n, 1.5, None, True]}}
        assert row["definition"] == {**DEFINITION, "version": str(n % 2)}
        assert row["state_machine"] == {**STATE_MACHINE, "Comment": awkward[n]}
        assert row["event_seq"] is not None
        assert times[record.id]["timeout_seconds"] == 60 + n
        assert times[record.id]["created_at"] == record.created_at
        assert times[record.id]["started_at"] == record.started_at
        assert times[record.id]["updated_at"] == record.updated_at


async def test_a_refused_insert_in_a_group_fails_only_its_own_submit(
    client: httpx.AsyncClient, admin: Session, server: LocalServer
) -> None:
    workflow = uuid.UUID(await create_workflow(client, admin, [llm_step("one", "{{x}}", "y")]))

    # The first goes alone; the other four together, where the fourth (id 1 again) breaks
    # the primary key.
    results = await _create_together(server, admin.user_id, [workflow] * 5, numbers=[0, 1, 2, 1, 4])

    assert isinstance(results[3], Conflict), results[3]
    good = [0, 1, 2, 4]
    assert [results[n].id for n in good] == [f"exec-together-{n}" for n in good]
    verified = await client.get("/audit/verify", headers=admin.headers)  # links the outbox
    assert verified.json()["valid"] is True, verified.text
    stored = _stored(server)
    assert sorted(stored) == [f"exec-together-{n}" for n in good]
    assert stored["exec-together-1"]["inputs"] == {"x": 1}  # the first one's, kept
    assert all(stored[f"exec-together-{n}"]["event_seq"] is not None for n in good)
    with psycopg.connect(server.database_url) as conn:
        events = conn.execute(
            "SELECT count(*) FROM audit_events WHERE resource_id = 'exec-together-1'"
            " UNION ALL SELECT count(*) FROM audit_pending WHERE resource_id = 'exec-together-1'"
        ).fetchall()
    assert events == [(1,), (0,)]  # the refused submit's event was never written


async def test_a_submit_to_a_missing_workflow_fails_alone(
    client: httpx.AsyncClient, admin: Session, server: LocalServer
) -> None:
    workflow = uuid.UUID(await create_workflow(client, admin, [llm_step("one", "{{x}}", "y")]))
    missing = uuid.uuid4()  # no such workflow: its row breaks a foreign key

    results = await _create_together(
        server, admin.user_id, [workflow, workflow, missing, workflow, workflow]
    )

    assert isinstance(results[2], NotFound)
    good = [0, 1, 3, 4]
    assert [results[n].id for n in good] == [f"exec-together-{n}" for n in good]
    assert sorted(_stored(server)) == [f"exec-together-{n}" for n in good]


async def test_a_workflow_whose_row_is_held_does_not_hold_submits_to_another(
    client: httpx.AsyncClient, admin: Session, server: LocalServer
) -> None:
    """Deleting a workflow's finished executions holds its row; an insert of an execution of
    it waits for that (the foreign key's check), and submits to other workflows must not
    wait with it."""
    steps = [llm_step("one", "{{x}}", "y")]
    held = uuid.UUID(await create_workflow(client, admin, steps))
    other = uuid.UUID(await create_workflow(client, admin, steps))
    # A bounded wait for the lock: this blocking call runs on the server's own event loop.
    with psycopg.connect(server.database_url, options="-c lock_timeout=5000") as holder:
        holder.execute("SELECT 1 FROM workflows WHERE id = %s FOR UPDATE", (held,))
        blocked = asyncio.ensure_future(
            _create_together(server, admin.user_id, [held], numbers=[99])
        )
        await lock_waiters(server.database_url, 1)

        results = await _create_together(server, admin.user_id, [other] * 5)

        assert [r.id for r in results] == [f"exec-together-{n}" for n in range(5)]
        assert not blocked.done()  # still waiting for the held row, alone
        holder.rollback()
    [created] = await blocked
    assert created.id == "exec-together-99"


async def test_executions_created_in_the_background_are_written_one_by_one(
    client: httpx.AsyncClient, admin: Session, server: LocalServer
) -> None:
    workflow = uuid.UUID(await create_workflow(client, admin, [llm_step("one", "{{x}}", "y")]))

    results = await _create_together(server, admin.user_id, [workflow] * 4, requests=False)

    assert [r.id for r in results] == [f"exec-together-{n}" for n in range(4)]
    # Each in its own statement, with the background's longer deadlines, as before.
    assert len({row["tx"] for row in _stored(server).values()}) == 4
