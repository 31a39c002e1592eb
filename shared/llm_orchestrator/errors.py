"""Domain exceptions.

Domain code raises these; the API maps each type to one HTTP status and error code in a
single table (``api/errors.py``). Nothing here knows about HTTP.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldError:
    """One field-level problem, reported as ``{"field": ..., "message": ...}``."""

    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class OrchestratorError(Exception):
    """Base class of every error the API knows how to answer."""

    def __init__(self, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})


class ValidationFailed(OrchestratorError):
    """The input is malformed; ``errors`` names each offending field."""

    def __init__(self, message: str, errors: Iterable[FieldError] = ()) -> None:
        self.errors = list(errors)
        super().__init__(message, {"errors": [e.as_dict() for e in self.errors]})


class Unauthorized(OrchestratorError):
    """No credentials, or credentials that are invalid, expired or revoked."""


class Forbidden(OrchestratorError):
    """Valid credentials without the permission the operation needs."""


class NotFound(OrchestratorError):
    """The resource does not exist, or belongs to someone the caller may not see."""


class Conflict(OrchestratorError):
    """The request clashes with the current state (duplicate, in use, wrong transition)."""


class RateLimited(OrchestratorError):
    """A rate-limit window is exhausted."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: int,
        limit: int,
        window: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, {"retry_after": retry_after, "limit": limit, "window": window})
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after), **(headers or {})}


class OverBudget(RateLimited):
    """The caller's monthly budget is spent: no execution starts until it resets."""

    def __init__(
        self,
        message: str,
        *,
        monthly_usd: float,
        spent_usd: float,
        resets_at: str,
        retry_after: int,
    ) -> None:
        OrchestratorError.__init__(
            self,
            message,
            {
                "reason": "budget_exhausted",
                "monthly_usd": monthly_usd,
                "spent_usd": spent_usd,
                "resets_at": resets_at,
                "retry_after": retry_after,
            },
        )
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}


class ServiceUnavailable(OrchestratorError):
    """A dependency (database, provider) is unavailable right now; worth retrying after
    ``retry_after`` seconds."""

    def __init__(
        self,
        message: str,
        details: Mapping[str, Any] | None = None,
        *,
        retry_after: int = 5,
    ) -> None:
        super().__init__(message, {"retry_after": retry_after, **(details or {})})
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(retry_after)}
