"""What the synchronous and the asynchronous client share: configuration, the description
of one API call, credentials, retry timing and the parsing of answers. No I/O here."""

from __future__ import annotations

import email.utils
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from llm_orchestrator.client.errors import APIConnectionError
from llm_orchestrator.client.models import Tokens

DEFAULT_URL = "http://127.0.0.1:8080/api/v1"
URL_ENV = "LLMO_URL"
API_KEY_ENV = "LLMO_API_KEY"
USER_AGENT = "llm-orchestrator-python"

RETRY_STATUSES = frozenset({429, 503})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
MAX_RETRY_SLEEP = 60.0
"""Longest single wait between two attempts: a longer Retry-After is raised, not slept."""
BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
PAGE_SIZE = 100
DEFAULT_VERSION = "1.0"
"""The version a workflow defined without one gets (the server's default)."""
"""The server's maximum ``limit``: the fewest round trips per listing."""

M = TypeVar("M", bound=BaseModel)


@dataclass
class Call:
    """One API request, as the resources describe it."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    authenticated: bool = True
    retry_connection_errors: bool | None = None
    """None: only for idempotent methods."""
    ok_statuses: frozenset[int] = frozenset()
    """Non-2xx statuses that are an answer, not an error (``/health`` says 503 in its body)."""
    timeout: float | None = None

    @property
    def may_retry_connection(self) -> bool:
        if self.retry_connection_errors is not None:
            return self.retry_connection_errors
        return self.method in IDEMPOTENT_METHODS


def resolve_base_url(base_url: str | None) -> str:
    return (base_url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")


def segment(value: str) -> str:
    """A path segment, escaped: an id never changes which endpoint a call reaches."""
    return quote(str(value), safe="")


def clean_params(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


class Credentials:
    """Who the client is: an API key, or access + refresh tokens (from a login or given).

    Keeps the newest refresh token (they rotate on every use) and tells the client when the
    access token is about to expire.
    """

    def __init__(
        self,
        *,
        api_key: str | None,
        token: str | None,
        refresh_token: str | None,
        token_expires_at: float | None,
        username: str | None,
        password: str | None,
        on_tokens: Callable[[Tokens], None] | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api_key = api_key
        self.access_token = token
        self.refresh_token = refresh_token
        self.expires_at = token_expires_at
        self.username = username
        self.password = password
        self._on_tokens = on_tokens
        self._clock = clock

    def headers(self) -> dict[str, str]:
        if self.access_token:
            return {"Authorization": f"Bearer {self.access_token}"}
        if self.api_key:
            return {"X-API-Key": self.api_key}
        return {}

    @property
    def can_log_in(self) -> bool:
        return bool(self.username and self.password)

    @property
    def can_renew(self) -> bool:
        return bool(self.refresh_token) or self.can_log_in

    def needs_token(self) -> bool:
        """No access token yet, but a way to get one (a refresh token, or a password)."""
        return self.access_token is None and self.api_key is None and self.can_renew

    def expiring(self) -> bool:
        """The access token expires within its last tenth of life (at most a minute)."""
        if self.access_token is None or self.expires_at is None or not self.can_renew:
            return False
        return self._clock() >= self.expires_at - self._margin

    _margin = 60.0

    def forget_tokens(self) -> None:
        """Drop the session's tokens (after a logout); the password is kept, if any."""
        self.access_token = None
        self.refresh_token = None
        self.expires_at = None

    def store(self, tokens: Tokens) -> None:
        self.access_token = tokens.access_token
        self.refresh_token = tokens.refresh_token
        self.expires_at = self._clock() + tokens.expires_in
        self._margin = min(60.0, tokens.expires_in / 10)
        if self._on_tokens is not None:
            self._on_tokens(tokens)


def _seconds_from_header(response: httpx.Response, now: float) -> float | None:
    retry_after = response.headers.get("Retry-After")
    if retry_after:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(retry_after)
            except (TypeError, ValueError):
                when = None
            if when is not None:
                return max(0.0, when.timestamp() - now)
    reset = response.headers.get("X-RateLimit-Reset")
    if reset:
        try:
            return max(0.0, float(reset) - now)
        except ValueError:
            return None
    return None


def retry_delay(
    response: httpx.Response | None, attempt: int, *, now: float | None = None
) -> float:
    """Seconds to wait before attempt ``attempt + 1``.

    The server's ``Retry-After`` (or ``X-RateLimit-Reset``) is a floor, with up to 10 % of
    jitter on top so a crowd of clients does not come back in the same instant; without
    either, exponential backoff with full jitter.
    """
    now = time.time() if now is None else now
    told = _seconds_from_header(response, now) if response is not None else None
    if told is not None:
        return told + random.uniform(0, max(0.1, told * 0.1))
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))


def connection_error(exc: httpx.TransportError, base_url: str) -> APIConnectionError:
    if isinstance(exc, httpx.TimeoutException):
        message = f"No answer from {base_url} in time ({type(exc).__name__})"
    else:
        message = f"Cannot reach {base_url}: {exc or type(exc).__name__}"
    return APIConnectionError(message, code="connection_error")


def parse(model: type[M], data: Any) -> M:
    return model.model_validate(data)


def page_items(body: Any, key: str) -> tuple[list[Any], int]:
    if not isinstance(body, dict):
        return [], 0
    items = body.get(key) or []
    return list(items), int(body.get("total") or 0)


def changed(before: Any, after: Any) -> bool:
    """Whether an execution moved: its status or one of its steps' status."""
    if before is None:
        return True
    if before.status != after.status:
        return True
    return {k: v.status for k, v in before.steps.items()} != {
        k: v.status for k, v in after.steps.items()
    }


POLL_FIRST = 0.2
POLL_FACTOR = 1.5
POLL_MAX = 1.0
LONG_POLL_SECONDS = 20


def next_poll_interval(interval: float) -> float:
    return min(POLL_MAX, interval * POLL_FACTOR)


def definition_body(
    definition: Mapping[str, Any] | None, fields: Mapping[str, Any]
) -> dict[str, Any]:
    body = dict(definition or {})
    body.update(fields)
    return body
