"""``Idempotency-Key`` on ``POST /workflows/{id}/execute`` (beyond the reference).

The same key from the same caller within 24 hours answers with the first request's status
code and body instead of starting another execution; the same key with a different request
is a 409 ``conflict``. Only requests that started an execution are remembered: one refused
with a 4xx leaves the key free for a corrected retry.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from fastapi.responses import JSONResponse

from llm_orchestrator.errors import Conflict, FieldError, ValidationFailed

if TYPE_CHECKING:
    from llm_orchestrator.runtime import Runtime
    from llm_orchestrator.store.idempotency import IdempotencyRepository, StoredRequest

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
TTL = timedelta(hours=24)
MAX_KEY_LENGTH = 255
# Visible ASCII only: a key is compared byte for byte and echoed in error details.
_KEY = re.compile(rf"^[\x21-\x7e]{{1,{MAX_KEY_LENGTH}}}$")
KEY_SCHEMA = {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": "^[!-~]+$"}
"""The same rule as the OpenAPI document states it."""

HEADER_DESCRIPTION = (
    "Optional, up to 255 visible ASCII characters (a UUID is a good choice). The same key "
    "from the same caller within 24 hours returns the original response (same status code "
    "and body, plus `Idempotent-Replayed: true`) instead of starting another execution; "
    "the same key with a different request body is 409 `conflict`."
)


def parse_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not _KEY.match(value):
        raise ValidationFailed(
            "Invalid Idempotency-Key header",
            [
                FieldError(
                    HEADER, f"Must be 1 to {MAX_KEY_LENGTH} visible ASCII characters, no spaces"
                )
            ],
        )
    return value


def fingerprint(workflow_id: str, body: dict[str, Any]) -> str:
    canonical = json.dumps(
        {"workflow_id": workflow_id, "body": body},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def repository(runtime: Runtime) -> IdempotencyRepository:
    return runtime.idempotency


def check_same_request(earlier: StoredRequest, request_hash: str, key: str) -> None:
    if earlier.request_hash != request_hash:
        raise Conflict(
            "Idempotency-Key was already used with a different request",
            {"idempotency_key": key},
        )


def execution_in_progress(earlier: StoredRequest, key: str) -> str:
    """The execution an unanswered earlier request started; 409 while it has none yet."""
    if earlier.execution_id is None:
        raise Conflict(
            "A request with this Idempotency-Key is still being processed; retry shortly",
            {"idempotency_key": key},
        )
    return earlier.execution_id


def replay(earlier: StoredRequest) -> JSONResponse:
    assert earlier.status_code is not None
    return JSONResponse(
        earlier.response, status_code=earlier.status_code, headers={REPLAYED_HEADER: "true"}
    )
