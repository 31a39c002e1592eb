"""Which task is serving a request, so its database work gets the request deadlines.

Apart from :mod:`llm_orchestrator.store.db` so that the HTTP middleware that marks a
request imports no database driver: a Lambda handler loads psycopg on its first query,
not at import.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = ["request_deadlines", "serving_request"]

_request_task: ContextVar[asyncio.Task[Any] | None] = ContextVar("llmo_request_task", default=None)


@contextmanager
def request_deadlines() -> Iterator[None]:
    """Marks the current task as serving a request: its database work gets the request
    deadlines. Tasks it spawns inherit the context variable but are not this task, so
    background work they do (an execution started by the request) keeps the longer ones."""
    token = _request_task.set(asyncio.current_task())
    try:
        yield
    finally:
        _request_task.reset(token)


def serving_request() -> bool:
    task = _request_task.get()
    return task is not None and task is asyncio.current_task()
