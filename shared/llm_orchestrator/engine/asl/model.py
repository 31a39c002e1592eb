"""The parsed form of a state machine in the ASL subset of ``docs/asl.md``.

Everything here is immutable and already validated by :mod:`.loader`; the interpreter
never re-checks a definition while it runs.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

STATES_ALL = "States.ALL"
STATES_TASK_FAILED = "States.TaskFailed"
STATES_TIMEOUT = "States.Timeout"
STATES_RUNTIME = "States.Runtime"

# AWS's upper bound for MaxDelaySeconds, used as the cap when a retrier sets none, so a
# long run of retries cannot overflow the backoff arithmetic.
MAX_RETRY_DELAY_SECONDS = 31_622_401


class UnsupportedDefinition(ValueError):
    """The definition is not in the subset this engine runs; ``path`` names where."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path or "/"
        self.reason = reason
        super().__init__(f"{reason} (at {self.path})")


def error_matches(error_equals: tuple[str, ...], error: str | None) -> bool:
    """Whether a retrier or catcher with ``error_equals`` handles ``error`` (AWS rules)."""
    if error == STATES_RUNTIME:
        # AWS never retries or catches States.Runtime, not even with States.ALL.
        return False
    for name in error_equals:
        if name == STATES_ALL or name == error:
            return True
        if name == STATES_TASK_FAILED and error != STATES_TIMEOUT:
            return True
    return False


class JitterStrategy(enum.StrEnum):
    FULL = "FULL"
    NONE = "NONE"


@dataclass(frozen=True, slots=True)
class Retrier:
    error_equals: tuple[str, ...]
    interval_seconds: int = 1
    max_attempts: int = 3
    backoff_rate: float = 2.0
    max_delay_seconds: int | None = None
    jitter: JitterStrategy = JitterStrategy.NONE

    def delay(self, retries_done: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retries_done + 1`` of this retrier."""
        try:
            delay = self.interval_seconds * self.backoff_rate**retries_done
        except OverflowError:
            delay = math.inf
        delay = min(delay, float(self.max_delay_seconds or MAX_RETRY_DELAY_SECONDS))
        if self.jitter is JitterStrategy.FULL:
            return rng.uniform(0.0, delay)
        return delay


@dataclass(frozen=True, slots=True)
class Catcher:
    """Routes matching errors to ``next``; the error lands at ``$.error`` (the only form)."""

    error_equals: tuple[str, ...]
    next: str


class ContextField(enum.Enum):
    """The context-object paths a payload may read."""

    TASK_TOKEN = "$$.Task.Token"
    RETRY_COUNT = "$$.State.RetryCount"
    EXECUTION_ID = "$$.Execution.Id"


class PathNotFound(LookupError):
    """A payload path names something the state input does not have."""


@dataclass(frozen=True, slots=True)
class InputPath:
    """``$`` or ``$.a.b``: a value read from the state input."""

    text: str
    keys: tuple[str, ...]

    def read(self, data: Mapping[str, Any]) -> Any:
        value: Any = data
        for key in self.keys:
            if not isinstance(value, Mapping) or key not in value:
                raise PathNotFound(f"the JSONPath '{self.text}' could not be found in the input")
            value = value[key]
        return value


@dataclass(frozen=True, slots=True)
class Literal:
    value: Any


PayloadNode: TypeAlias = "Literal | InputPath | ContextField | PayloadTemplate"


@dataclass(frozen=True, slots=True)
class RenderContext:
    execution_id: str
    retry_count: int
    task_token: str | None


@dataclass(frozen=True, slots=True)
class PayloadTemplate:
    """A ``Payload`` object with its ``key.$`` entries compiled to readers."""

    fields: tuple[tuple[str, PayloadNode], ...]

    def render(self, data: Mapping[str, Any], context: RenderContext) -> dict[str, Any]:
        """The payload for one invocation; raises :class:`PathNotFound`."""
        rendered: dict[str, Any] = {}
        for key, node in self.fields:
            if isinstance(node, Literal):
                rendered[key] = copy_json(node.value)
            elif isinstance(node, InputPath):
                # A copy, so an invoker that mutates its payload cannot change the state input.
                rendered[key] = copy_json(node.read(data))
            elif isinstance(node, PayloadTemplate):
                rendered[key] = node.render(data, context)
            elif node is ContextField.TASK_TOKEN:
                rendered[key] = context.task_token
            elif node is ContextField.RETRY_COUNT:
                rendered[key] = context.retry_count
            else:
                rendered[key] = context.execution_id
        return rendered

    def references(self, field: ContextField) -> bool:
        return any(
            node is field or (isinstance(node, PayloadTemplate) and node.references(field))
            for _, node in self.fields
        )


@dataclass(frozen=True, slots=True)
class TaskState:
    name: str
    function_name: str
    payload: PayloadTemplate
    wait_for_task_token: bool
    timeout_seconds: int | None
    retry: tuple[Retrier, ...]
    catch: tuple[Catcher, ...]
    next: str | None  # None: the state ends its branch or the execution


@dataclass(frozen=True, slots=True)
class ParallelState:
    name: str
    branches: tuple[Scope, ...]
    catch: tuple[Catcher, ...]
    next: str | None


@dataclass(frozen=True, slots=True)
class PassState:
    name: str
    next: str | None


@dataclass(frozen=True, slots=True)
class SucceedState:
    name: str


@dataclass(frozen=True, slots=True)
class FailState:
    name: str
    error: str | None
    cause: str | None


State = TaskState | ParallelState | PassState | SucceedState | FailState


@dataclass(frozen=True, slots=True)
class Scope:
    """The top level of a machine, or one Parallel branch."""

    start_at: str
    states: Mapping[str, State]


@dataclass(frozen=True, slots=True)
class StateMachine:
    root: Scope
    timeout_seconds: int | None
    comment: str | None = None


def copy_json(value: Any) -> Any:
    """A deep copy of a JSON value; raises ``TypeError`` for anything that is not JSON."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Mapping):
        copied: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be strings, got {key!r}")
            copied[key] = copy_json(item)
        return copied
    if isinstance(value, list):
        return [copy_json(item) for item in value]
    raise TypeError(f"not a JSON value: {type(value).__name__}")
