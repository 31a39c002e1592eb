"""Event envelopes, shaped like EventBridge's, so a pattern matches the same fields locally.

``POST /events`` takes the PutEvents entry fields (``source``, ``detail-type``,
``detail``, ``resources``); the envelope adds ``version``, ``id``, ``time``, ``account``
and ``region`` as EventBridge does before rules see the event.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

LOCAL_ACCOUNT = "000000000000"
LOCAL_REGION = "local"
SCHEDULED_EVENT = "Scheduled Event"
SCHEDULER_SOURCE = "aws.scheduler"


def envelope(
    *,
    source: str,
    detail_type: str,
    detail: Mapping[str, Any],
    resources: Sequence[str] = (),
    now: datetime,
    event_id: str | None = None,
    account: str = LOCAL_ACCOUNT,
    region: str = LOCAL_REGION,
) -> dict[str, Any]:
    return {
        "version": "0",
        "id": event_id or str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": source,
        "account": account,
        "time": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": list(resources),
        "detail": dict(detail),
    }


def scheduled_event(trigger_id: str, scheduled_time: datetime, event_id: str) -> dict[str, Any]:
    """What a schedule's ``$.…`` input paths read: ``$.time`` is the tick it fired for."""
    return envelope(
        source=SCHEDULER_SOURCE,
        detail_type=SCHEDULED_EVENT,
        detail={},
        resources=[trigger_id],
        now=scheduled_time,
        event_id=event_id,
    )
