"""The ``events`` Lambda: what EventBridge delivers, applied to PostgreSQL.

Three kinds of delivery, told apart by shape:

- a "Step Functions Execution Status Change" event (an EventBridge rule on ``aws.states``):
  the run's ending is applied to its execution (see ``engine/stepfunctions_sync.py``);
- ``{"trigger_id", "scheduled_time", "delivery_id"}``: an EventBridge Scheduler schedule's
  target input;
- ``{"trigger_id", "event": <the matched event>}``: an event rule's target input.

A trigger delivery creates the execution row, then starts it, through the same
``execute`` the API uses, as the trigger's creator. Redeliveries of one tick or one event
start nothing twice. Like the step runner: one event loop per warm container, the runtime
built on the first invocation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

from llm_orchestrator.clock import utcnow
from llm_orchestrator.config import get_settings
from llm_orchestrator.engine.stepfunctions_sync import StatusChange, StatusSync
from llm_orchestrator.runtime import Runtime, build_runtime
from llm_orchestrator.triggers.events import scheduled_event

log = logging.getLogger(__name__)


def _runtime_from_environment() -> Runtime:
    return build_runtime(get_settings(), serves_http=False)


class EventsLambda:
    def __init__(self, runtime_factory: Callable[[], Runtime] = _runtime_from_environment) -> None:
        self._runtime_factory = runtime_factory
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runtime: Runtime | None = None
        self._sync: StatusSync | None = None

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(self.handle(event))

    async def handle(self, event: Mapping[str, Any]) -> dict[str, Any]:
        runtime = self._runtime_or_build()
        change = StatusChange.from_event(event)
        if change is not None:
            assert self._sync is not None
            outcome = await self._sync.apply(change)
            log.info("execution %s: %s (%s)", change.execution_id, change.status, outcome)
            return {"execution_id": change.execution_id, "outcome": outcome}
        trigger_id = event.get("trigger_id")
        if isinstance(trigger_id, str):
            return await self._fire(runtime, trigger_id, event)
        log.warning("ignored an event of an unknown shape (source %r)", event.get("source"))
        return {"outcome": "ignored"}

    async def _fire(
        self, runtime: Runtime, trigger_id: str, delivery: Mapping[str, Any]
    ) -> dict[str, Any]:
        matched = delivery.get("event")
        if isinstance(matched, Mapping):
            event: Mapping[str, Any] = matched
            fire_key = str(matched.get("id") or "") or None
        else:
            scheduled = _parse_time(delivery.get("scheduled_time")) or utcnow()
            fire_key = str(delivery.get("delivery_id") or scheduled.isoformat())
            event = scheduled_event(trigger_id, scheduled, fire_key)
        firing = await runtime.triggers.fire_delivery(trigger_id, event, fire_key=fire_key)
        if firing is None:
            return {"trigger_id": trigger_id, "outcome": "trigger gone; schedule or rule removed"}
        outcome = firing.skipped or ("started" if firing.execution_id else "not started")
        log.info("trigger %s: %s %s", trigger_id, outcome, firing.execution_id or firing.error)
        return {
            "trigger_id": trigger_id,
            "outcome": outcome,
            "execution_id": firing.execution_id,
            "error": firing.error,
        }

    def _runtime_or_build(self) -> Runtime:
        if self._runtime is None:
            self._runtime = runtime = self._runtime_factory()
            # The lifecycle announces each end it writes: audit event and completion event.
            self._sync = StatusSync(runtime.execution_store, runtime.lifecycle)
        return self._runtime

    def close(self) -> None:
        """Release the pool and the loop (tests; a Lambda container just goes away)."""
        if self._loop is not None and self._runtime is not None:
            self._loop.run_until_complete(self._runtime.close())
        if self._loop is not None:
            self._loop.close()
        self._loop = self._runtime = self._sync = None


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def make_events_handler(
    runtime_factory: Callable[[], Runtime] = _runtime_from_environment,
) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The Lambda handler with Powertools logging (correlated by the event's id) and tracing
    that never captures the response."""
    from aws_lambda_powertools import Logger, Tracer

    core = EventsLambda(runtime_factory)
    logger = Logger(service="events")
    tracer = Tracer(service="events")

    @logger.inject_lambda_context(correlation_id_path="id")
    @tracer.capture_lambda_handler(capture_response=False)
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return core(event, context)

    handler.close = core.close
    return cast(Callable[[dict[str, Any], Any], dict[str, Any]], handler)
