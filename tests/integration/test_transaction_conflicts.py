"""Two transactions that deadlock: the one PostgreSQL aborts is a retryable 503 that says
it lost a conflict, not a "connection failed" that sends an operator after the network."""

from __future__ import annotations

import asyncio

from llm_orchestrator.errors import ServiceUnavailable
from llm_orchestrator.server import LocalServer
from tests.integration.conftest import CreateUser


async def test_the_loser_of_a_deadlock_is_told_to_retry_and_the_winner_commits(
    server: LocalServer, create_user: CreateUser
) -> None:
    await create_user("second")
    db = server.runtime.db
    async with db.connection() as conn:
        cur = await conn.execute("SELECT id FROM users ORDER BY id LIMIT 2")
        first, second = [row["id"] for row in await cur.fetchall()]
    holding = [asyncio.Event(), asyncio.Event()]

    async def lock(me: int, rows: tuple[str, str]) -> None:
        async with db.transaction() as conn:
            await conn.execute("SELECT 1 FROM users WHERE id = %s FOR UPDATE", (rows[0],))
            holding[me].set()
            await holding[1 - me].wait()
            await conn.execute("SELECT 1 FROM users WHERE id = %s FOR UPDATE", (rows[1],))

    outcomes = await asyncio.wait_for(
        asyncio.gather(lock(0, (first, second)), lock(1, (second, first)), return_exceptions=True),
        timeout=30,
    )

    lost = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    assert len(lost) == 1, outcomes
    assert isinstance(lost[0], ServiceUnavailable)
    assert "conflict with another; retry" in lost[0].message
    assert lost[0].retry_after > 0
