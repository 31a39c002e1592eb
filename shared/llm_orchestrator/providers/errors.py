"""Provider errors: what every adapter raises instead of its vendor's exceptions.

The class names are part of the contract with the state machine: a step-runner Lambda
that raises one of these reports its class name as the error name, and the compiled
Retry policy matches ``ProviderRateLimited`` and ``ProviderUnavailable`` by name. Every
other name is permanent and goes straight to the Catch. Renaming a class changes
retry behaviour in production.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ProviderAuthError",
    "ProviderBadRequest",
    "ProviderError",
    "ProviderInvalidResponse",
    "ProviderQuotaExceeded",
    "ProviderRateLimited",
    "ProviderUnavailable",
    "StructuredOutputInvalid",
    "UnsupportedProvider",
]


class ProviderError(Exception):
    """A call to an LLM or embedding provider failed.

    ``status_code`` is the provider's HTTP status when there was one; ``retry_after`` is
    the delay in seconds the provider asked for (Retry-After), when it asked.
    Messages never contain credentials.
    """

    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status_code = status_code
        self.retry_after = retry_after


class ProviderRateLimited(ProviderError):
    """HTTP 429: too many requests or tokens for now; the state machine backs off."""

    retryable = True


class ProviderUnavailable(ProviderError):
    """5xx, timeouts, refused or dropped connections: transient, retried with backoff."""

    retryable = True


class ProviderAuthError(ProviderError):
    """The provider refused the credentials (401/403), or none are configured."""


class ProviderBadRequest(ProviderError):
    """The provider rejected the request itself (400/404/422, unknown model): permanent."""


class ProviderQuotaExceeded(ProviderError):
    """A 429 that waiting will not fix: the account's quota or billing limit is exhausted."""


class ProviderInvalidResponse(ProviderError):
    """The provider answered 2xx with something that is not a usable response."""


class StructuredOutputInvalid(ProviderInvalidResponse):
    """A step asked for JSON matching its schema and the reply did not parse or match it,
    even after one corrective retry: permanent (the step fails; no fallback is tried)."""


class UnsupportedProvider(ProviderBadRequest):
    """The workflow names a provider, or a capability of one, this build does not offer."""
