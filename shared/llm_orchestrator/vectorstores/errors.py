"""A vector database's HTTP outcome → the providers' errors, the names the state machine
retries by. Messages name the database and the setting to fix, never a value."""

from __future__ import annotations

from llm_orchestrator.providers.errors import (
    ProviderAuthError,
    ProviderBadRequest,
    ProviderError,
    ProviderRateLimited,
    ProviderUnavailable,
)

__all__ = [
    "MAX_VENDOR_MESSAGE_CHARS",
    "from_status",
    "not_configured",
    "parse_retry_after",
    "unreachable",
]

MAX_VENDOR_MESSAGE_CHARS = 300


def from_status(
    database: str,
    label: str,
    status: int,
    message: str,
    *,
    key_setting: str,
    retry_after: float | None = None,
) -> ProviderError:
    text = " ".join(message.split())[:MAX_VENDOR_MESSAGE_CHARS] or f"HTTP {status}"
    if status in (401, 403):
        return ProviderAuthError(
            f"{label} refused the credentials ({status}): check {key_setting}",
            provider=database,
            status_code=status,
        )
    if status == 429:
        return ProviderRateLimited(
            f"{label} is rate limiting requests (429): {text}",
            provider=database,
            status_code=status,
            retry_after=retry_after,
        )
    if status >= 500:
        return ProviderUnavailable(
            f"{label} failed ({status}): {text}", provider=database, status_code=status
        )
    return ProviderBadRequest(
        f"{label} refused the request ({status}): {text}", provider=database, status_code=status
    )


def unreachable(database: str, label: str, endpoint: str) -> ProviderUnavailable:
    return ProviderUnavailable(f"could not reach {label} at {endpoint}", provider=database)


def not_configured(database: str, label: str, settings: str) -> ProviderAuthError:
    return ProviderAuthError(
        f"{label} is not configured: set {settings} (a secret through POST /admin/secrets"
        " or an environment variable)",
        provider=database,
    )


def parse_retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
