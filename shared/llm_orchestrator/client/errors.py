"""One exception class per error code of the API, all carrying the error envelope."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class FieldError:
    field: str
    message: str


class LLMOrchestratorError(Exception):
    """Any error the API answered (or, for ``APIConnectionError``, could not answer)."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "internal_error",
        details: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details: dict[str, Any] = details or {}
        self.request_id = request_id

    def __str__(self) -> str:
        where = f" [request {self.request_id}]" if self.request_id else ""
        status = f"{self.status} " if self.status is not None else ""
        return f"{status}{self.code}: {self.message}{where}"


class ValidationError(LLMOrchestratorError):
    """400 ``validation_error``; ``errors`` lists each offending field."""

    @property
    def errors(self) -> list[FieldError]:
        raw = self.details.get("errors")
        if not isinstance(raw, list):
            return []
        return [
            FieldError(str(item.get("field", "")), str(item.get("message", "")))
            for item in raw
            if isinstance(item, dict)
        ]


class Unauthorized(LLMOrchestratorError):
    """401: missing, invalid or expired credentials."""


class Forbidden(LLMOrchestratorError):
    """403: valid credentials without the permission the call needs."""


class NotFound(LLMOrchestratorError):
    """404: no such resource (or one the caller may not see)."""


class Conflict(LLMOrchestratorError):
    """409: the request clashes with the resource's current state."""


class RateLimited(LLMOrchestratorError):
    """429, still refused after the client's retries; ``retry_after`` is in seconds."""

    @property
    def retry_after(self) -> float | None:
        value = self.details.get("retry_after")
        return float(value) if isinstance(value, int | float) else None


class ServerError(LLMOrchestratorError):
    """5xx: the server failed (500) or is unavailable (503)."""


class APIConnectionError(LLMOrchestratorError):
    """The server could not be reached, or did not answer in time."""


class WaitTimeout(LLMOrchestratorError, TimeoutError):
    """``executions.wait`` gave up before the execution ended."""


_BY_CODE: dict[str, type[LLMOrchestratorError]] = {
    "validation_error": ValidationError,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "conflict": Conflict,
    "rate_limited": RateLimited,
    "internal_error": ServerError,
}
_BY_STATUS: dict[int, type[LLMOrchestratorError]] = {
    400: ValidationError,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    429: RateLimited,
}


def error_from_response(response: httpx.Response) -> LLMOrchestratorError:
    """The exception for a non-2xx answer: by the envelope's ``code``, else by status."""
    request_id = response.headers.get("X-Request-ID")
    code = ""
    message = ""
    details: dict[str, Any] = {}
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code = str(body.get("code") or "")
        message = str(body.get("message") or "")
        raw_details = body.get("details")
        details = raw_details if isinstance(raw_details, dict) else {}
        request_id = str(body.get("request_id") or request_id or "") or None
    cls = _BY_CODE.get(code) or _BY_STATUS.get(response.status_code)
    if cls is None:
        cls = ServerError if response.status_code >= 500 else LLMOrchestratorError
    if not message:
        message = response.reason_phrase or f"HTTP {response.status_code}"
    if cls is RateLimited and "retry_after" not in details:
        header = response.headers.get("Retry-After")
        if header and header.isdigit():
            details = {**details, "retry_after": int(header)}
    return cls(
        message,
        status=response.status_code,
        code=code or _default_code(response.status_code),
        details=details,
        request_id=request_id,
    )


def _default_code(status: int) -> str:
    for code, cls in _BY_CODE.items():
        if _BY_STATUS.get(status) is cls:
            return code
    return "internal_error"
