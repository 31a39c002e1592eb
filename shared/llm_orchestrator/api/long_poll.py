"""Long-poll for ``GET /workflows/{id}/status?wait=N``: hold the answer until the
execution's status or any step's status changes, or ``N`` seconds pass.

The held request re-reads a small signature of the execution (its status and its steps'
statuses, one indexed query) every ``POLL_INTERVAL_SECONDS``. Polling the database rather
than LISTEN/NOTIFY is deliberate: the writers (step runners in any process or Lambda
container) stay exactly as they are, with no NOTIFY in their commits (PostgreSQL serialises
every committing transaction that notifies), no listener connection per process, and
nothing that pins a connection behind a pooling proxy. The cost falls on the waiters alone:
one cheap query per interval instead of a client's full authenticated status request.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fastapi import Request

from llm_orchestrator.executions.status import TERMINAL
from llm_orchestrator.store.execution_watch import ExecutionSignature, ExecutionWatchRepository

if TYPE_CHECKING:
    from llm_orchestrator.executions.service import ExecutionState

MAX_WAIT_SECONDS = 25
"""Under API Gateway's 29 s integration timeout."""
POLL_INTERVAL_SECONDS = 0.1


def signature_of(state: ExecutionState) -> ExecutionSignature:
    # Plain strings on both sides: an enum member hashes by its name, not its value.
    return ExecutionSignature(
        str(state.record.status),
        frozenset((step_id, str(run.status)) for step_id, run in state.runs.items()),
    )


def has_ended(state: ExecutionState) -> bool:
    return state.record.status in TERMINAL


async def changed_within(
    watch: ExecutionWatchRepository, state: ExecutionState, seconds: float, request: Request
) -> bool:
    """Whether the execution changed from ``state`` within ``seconds``.

    Answers False at once for an execution that has ended (nothing will change) and
    stops early when the client has gone away.
    """
    if seconds <= 0 or has_ended(state):
        return False
    seen = signature_of(state)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (remaining := deadline - loop.time()) > 0:
        await asyncio.sleep(min(POLL_INTERVAL_SECONDS, remaining))
        if await watch.signature(state.record.id) != seen:
            return True
        if await request.is_disconnected():
            return False
    return False
