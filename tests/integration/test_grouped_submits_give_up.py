"""A grouped submit insert queued behind one that waits (``store/executions.py``) waits no
longer than a request waits for a database connection, and gives up unsent: under a
stalled database the submits queued behind each other must not wait one deadline each."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import psycopg
import pytest

from llm_orchestrator.config import Settings
from llm_orchestrator.errors import ServiceUnavailable
from llm_orchestrator.server import LocalServer
from tests.integration.conftest import Session
from tests.integration.execution_support import create_workflow, llm_step, lock_waiters
from tests.integration.test_grouped_submits import _create_together, _stored

pytestmark = pytest.mark.usefixtures("fake_openai")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # A request waits 1 s for a connection; a statement may take 30 s (the one ahead waits
    # on a row the test holds).
    return settings.model_copy(
        update={"db_pool_timeout_seconds": 1.0, "db_statement_timeout_seconds": 30.0}
    )


async def test_a_queued_insert_gives_up_unsent_while_the_one_ahead_still_waits(
    client: httpx.AsyncClient, admin: Session, server: LocalServer
) -> None:
    workflow = uuid.UUID(await create_workflow(client, admin, [llm_step("one", "{{x}}", "y")]))
    # A bounded wait for the lock: this blocking call runs on the server's own event loop.
    with psycopg.connect(server.database_url, options="-c lock_timeout=5000") as holder:
        holder.execute("SELECT 1 FROM workflows WHERE id = %s FOR UPDATE", (workflow,))
        ahead = asyncio.ensure_future(
            _create_together(server, admin.user_id, [workflow], numbers=[0])
        )
        await lock_waiters(server.database_url, 1)

        [queued] = await _create_together(server, admin.user_id, [workflow], numbers=[1])

        assert isinstance(queued, ServiceUnavailable), queued
        assert "no database connection became available in time" in str(queued)
        assert not ahead.done()  # it gave up on its own, not after the one ahead
        holder.rollback()
    [created] = await ahead
    assert created.id == "exec-together-0"
    assert sorted(_stored(server)) == ["exec-together-0"]  # the one that gave up: never sent
