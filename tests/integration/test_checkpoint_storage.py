"""How checkpoints are stored (migrations 0081, 0082): an automatic checkpoint keeps its own
step's outputs and names the one it extends; what a reader sees is each whole snapshot.
Here: a page of them is built in one walk and equals what ``checkpoint_snapshot`` builds,
a cycle made by hand does not hang a reader, and the code from before 0081, which inserts
whole snapshots into ``checkpoints``, still can, its rows extended by the next commit."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from psycopg.types.json import Jsonb

from llm_orchestrator.server import LocalServer
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import Session
from tests.integration.execution_support import (
    checkpoints,
    control,
    launch,
    launch_held,
    llm_step,
    wait_for,
    wait_parked,
)

pytestmark = pytest.mark.usefixtures("fake_openai")

# Step ids of several lengths, not in jsonb's key order, so that the order of a snapshot's
# keys shows whether it was built as the database builds it.
LONG_CHAIN = [
    llm_step("ccc", "ccc {{x}}", "o1"),
    llm_step("a", "a {{o1}}", "o2", depends_on=["ccc"]),
    llm_step("bb", "bb {{o2}}", "o3", depends_on=["a"]),
    llm_step("dddd", "dddd {{o3}}", "o4", depends_on=["bb"]),
    llm_step("e", "e {{o4}}", "o5", depends_on=["dddd"]),
]
CHAIN = [
    llm_step("a", "a {{x}}", "out_a"),
    llm_step("b", "b {{out_a}}", "out_b", depends_on=["a"]),
]


async def _rows(server: LocalServer, sql: str, *params: Any) -> list[dict[str, Any]]:
    async with server.runtime.db.connection() as conn:
        cur = await conn.execute(sql, params)
        return list(await cur.fetchall())


async def test_every_page_shows_the_snapshots_the_database_builds(
    client: httpx.AsyncClient, admin: Session, server: LocalServer
) -> None:
    workflow_id, execution_id = await launch(client, admin, LONG_CHAIN, {"x": "1"})
    assert (await wait_for(client, admin, workflow_id, execution_id))["status"] == "completed"
    built = {
        row["id"]: row["snapshot"]
        for row in await _rows(
            server,
            "SELECT id, checkpoint_snapshot(id) AS snapshot FROM checkpoint_rows"
            " WHERE execution_id = %s",
            execution_id,
        )
    }
    chained = await _rows(
        server,
        "SELECT count(*) AS n FROM checkpoint_rows WHERE execution_id = %s"
        " AND parent_id IS NOT NULL",
        execution_id,
    )
    assert chained[0]["n"] == len(LONG_CHAIN) - 1  # the first is whole, the rest extend it

    pages = [
        await checkpoints(client, admin, workflow_id, execution_id, limit=2, offset=offset)
        for offset in (0, 2, 4)
    ]

    listed = [checkpoint for page in pages for checkpoint in page]
    assert [c["step_id"] for c in listed] == [s["id"] for s in LONG_CHAIN]
    for checkpoint in listed:
        snapshot = checkpoint["snapshot"]
        assert snapshot == built[checkpoint["id"]]
        assert list(snapshot) == list(built[checkpoint["id"]])  # the JSON's order too
        assert list(snapshot["steps"]) == list(built[checkpoint["id"]]["steps"])
    assert list(listed[-1]["snapshot"]["steps"]) == ["a", "e", "bb", "ccc", "dddd"]


async def test_a_cycle_made_by_hand_does_not_hang_a_page(
    client: httpx.AsyncClient, admin: Session, server: LocalServer
) -> None:
    workflow_id, execution_id = await launch(client, admin, LONG_CHAIN, {"x": "1"})
    assert (await wait_for(client, admin, workflow_id, execution_id))["status"] == "completed"
    ordered = await _rows(
        server,
        "SELECT id FROM checkpoint_rows WHERE execution_id = %s ORDER BY created_at, id",
        execution_id,
    )
    first, last = ordered[0]["id"], ordered[-1]["id"]
    async with server.runtime.db.connection() as conn:
        await conn.execute("UPDATE checkpoint_rows SET parent_id = %s WHERE id = %s", (last, first))

    listed = await checkpoints(client, admin, workflow_id, execution_id, limit=10, offset=0)

    assert [c["step_id"] for c in listed] == [s["id"] for s in LONG_CHAIN]
    assert set(listed[-1]["snapshot"]["steps"]) == {s["id"] for s in LONG_CHAIN}


async def test_the_code_before_0081_still_writes_whole_checkpoints_that_the_next_extends(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, fake_openai: FakeOpenAI
) -> None:
    workflow_id, execution_id = await launch_held(client, admin, fake_openai, CHAIN, {"x": "1"})
    assert (await control(client, admin, "pause", workflow_id, execution_id)).status_code == 200
    fake_openai.release()
    await wait_parked(server, execution_id, "b")  # a has committed, b waits for resume

    # What that code's step commit and manual checkpoint wrote, as it wrote them.
    written = await _rows(
        server,
        "INSERT INTO checkpoints (id, execution_id, step_id, kind, snapshot)"
        " VALUES (%s, %s, 'a', 'auto', %s) RETURNING *",
        "ckpt-before-0081",
        execution_id,
        Jsonb({"inputs": {"x": "1"}, "steps": {"a": {"out_a": "as the old code saw it"}}}),
    )
    await _rows(
        server,
        "INSERT INTO checkpoints (id, execution_id, step_id, kind, snapshot)"
        " VALUES (%s, %s, NULL, 'manual', %s) RETURNING *",
        "ckpt-manual-before-0081",
        execution_id,
        Jsonb({"inputs": {"x": "1"}, "steps": {}}),
    )
    assert written[0]["created_at"] is not None
    [row] = await _rows(
        server, "SELECT last_checkpoint_id FROM executions WHERE id = %s", execution_id
    )
    assert row["last_checkpoint_id"] == "ckpt-before-0081"  # the manual one is not a link

    assert (await control(client, admin, "resume", workflow_id, execution_id)).status_code == 200
    assert (await wait_for(client, admin, workflow_id, execution_id))["status"] == "completed"

    listed = await checkpoints(client, admin, workflow_id, execution_id, limit=10, offset=0)
    [b] = [c for c in listed if c["step_id"] == "b"]
    assert b["snapshot"]["steps"]["a"] == {"out_a": "as the old code saw it"}
    assert set(b["snapshot"]["steps"]) == {"a", "b"}
