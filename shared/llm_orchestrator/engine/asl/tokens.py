"""Task tokens of ``.waitForTaskToken`` Tasks, and SendTaskSuccess / SendTaskFailure.

Tokens are opaque random strings, so the outer engine can store them in PostgreSQL and hand
them back later. The registry holds only the waits of runs in this process: a token from a
run that has ended (or from before a restart) is unknown here, like a stale token on AWS.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any


class TaskTokenNotFound(LookupError):
    """No Task is waiting on this token (never issued, already answered, timed out, stopped)."""


@dataclass(frozen=True, slots=True)
class TokenOutcome:
    """How a waiting Task was answered: ``output`` on success, else ``error`` and ``cause``."""

    succeeded: bool
    output: Any = None
    error: str | None = None
    cause: str | None = None


class TaskTokenRegistry:
    """The waits of ``.waitForTaskToken`` Tasks, shared by every execution of one engine.

    Call it from the event loop that runs the executions; nothing here is thread-safe.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[TokenOutcome]] = {}

    def issue(self) -> tuple[str, asyncio.Future[TokenOutcome]]:
        """A new token and the future its answer will resolve (used by the interpreter).

        The wait exists from the moment the token does, so an answer that arrives while the
        invoker is still running is kept, as on AWS.
        """
        token = secrets.token_urlsafe(32)
        outcome: asyncio.Future[TokenOutcome] = asyncio.get_running_loop().create_future()
        self._waiting[token] = outcome
        return token, outcome

    def discard(self, token: str) -> None:
        """Forget ``token``; later answers to it raise :class:`TaskTokenNotFound`."""
        self._waiting.pop(token, None)

    def send_task_success(self, token: str, output: Any = None) -> None:
        self._answer(token, TokenOutcome(succeeded=True, output=output))

    def send_task_failure(self, token: str, error: str, cause: str = "") -> None:
        self._answer(token, TokenOutcome(succeeded=False, error=error, cause=cause))

    def __contains__(self, token: object) -> bool:
        return token in self._waiting

    @property
    def pending_count(self) -> int:
        """How many Tasks are waiting (no ``__len__``: an empty registry must stay truthy)."""
        return len(self._waiting)

    def _answer(self, token: str, outcome: TokenOutcome) -> None:
        waiting = self._waiting.pop(token, None)
        if waiting is None or waiting.done():
            raise TaskTokenNotFound("no task is waiting on this task token")
        waiting.set_result(outcome)
