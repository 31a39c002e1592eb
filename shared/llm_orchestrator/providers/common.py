"""What every vendor adapter shares: client caching, timing, and error vocabulary.

Vendor-neutral on purpose: nothing here imports an SDK. Each adapter keeps the part
that is its vendor's (which exception means what) and uses these for the rest, so the
same HTTP status reads the same way whichever provider answered it.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, Generic, TypeVar
from urllib.parse import urlsplit

from .base import CredentialResolver, credential_names
from .errors import (
    ProviderAuthError,
    ProviderBadRequest,
    ProviderError,
    ProviderInvalidResponse,
    ProviderRateLimited,
    ProviderUnavailable,
)

__all__ = [
    "DEFAULT_TIMEOUT_SECONDS",
    "MAX_DETAIL_CHARS",
    "ClientCache",
    "SdkAdapter",
    "auth_refused",
    "clean_detail",
    "float_vector",
    "from_status",
    "host_of",
    "message_of",
    "missing_key",
    "redact",
    "retry_after_seconds",
    "timed",
    "token_count",
    "unreachable",
]

DEFAULT_TIMEOUT_SECONDS = 60.0
MAX_DETAIL_CHARS = 500
"""Error bodies from proxies in front of a provider can be whole HTML pages."""

_C = TypeVar("_C")
_T = TypeVar("_T")


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date).

    Header names are matched case-insensitively, whatever mapping the SDK hands over.
    """
    if not headers:
        return None
    lowered = {str(name).lower(): str(value) for name, value in headers.items()}
    milliseconds = _finite_float(lowered.get("retry-after-ms"))
    if milliseconds is not None:
        return max(0.0, milliseconds / 1000.0)
    raw = lowered.get("retry-after")
    if not raw:
        return None
    seconds = _finite_float(raw)
    if seconds is not None:
        return max(0.0, seconds)
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _finite_float(raw: str | None) -> float | None:
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every secret in ``secrets`` replaced by ``[redacted]``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text


def host_of(url: str) -> str:
    """``host:port`` of ``url``: never its path, query or ``user:password@``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "an invalid URL"
    host = parts.hostname or "an unknown host"
    return f"{host}:{port}" if port else host


def missing_key(provider: str) -> ProviderAuthError:
    names = credential_names(provider)
    return ProviderAuthError(
        f"no API key configured for provider '{provider}': "
        f"set the {names.api_key} secret or environment variable",
        provider=provider,
    )


def auth_refused(provider: str, label: str, status: int | None) -> ProviderAuthError:
    # Deliberately without the provider's text: some vendors quote (part of) the key.
    names = credential_names(provider)
    return ProviderAuthError(
        f"{provider} refused the credentials ({label}): "
        f"check the {names.api_key} secret or environment variable",
        provider=provider,
        status_code=status,
    )


def unreachable(provider: str, url: str, reason: str) -> ProviderUnavailable:
    return ProviderUnavailable(
        f"{provider} could not be reached at {host_of(url)}: {reason}", provider=provider
    )


def from_status(
    provider: str,
    status: int,
    *,
    detail: str,
    headers: Mapping[str, str] | None,
    code: str | None = None,
    retryable_statuses: frozenset[int] = frozenset({408, 409}),
) -> ProviderError:
    """The common reading of an HTTP error status.

    401/403 are refused credentials (permanent, naming the secret to check); 429 is a rate
    limit (retried, honouring ``Retry-After``); 5xx and ``retryable_statuses`` are the
    provider being unavailable (retried); anything else is the request's own fault
    (permanent, with the provider's message).
    """
    label = f"HTTP {status}, {code}" if code else f"HTTP {status}"
    if status in (401, 403):
        return auth_refused(provider, label, status)
    retry_after = retry_after_seconds(headers)
    if status == 429:
        return ProviderRateLimited(
            f"{provider} rate limit hit ({label}): {detail}",
            provider=provider,
            status_code=status,
            retry_after=retry_after,
        )
    if status >= 500 or status in retryable_statuses:
        return ProviderUnavailable(
            f"{provider} is unavailable ({label}): {detail}",
            provider=provider,
            status_code=status,
            retry_after=retry_after,
        )
    return ProviderBadRequest(
        f"{provider} rejected the request ({label}): {detail}",
        provider=provider,
        status_code=status,
    )


def token_count(value: Any) -> int:
    """A usage figure as an int; anything that is not a finite number counts as 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return int(value) if math.isfinite(value) and value >= 0 else 0


def float_vector(values: Any) -> list[float] | None:
    """``values`` as a list of finite floats, or None when it is not one."""
    if not isinstance(values, list) or not values:
        return None
    vector: list[float] = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if not math.isfinite(value):
            return None
        vector.append(float(value))
    return vector


def message_of(body: object) -> str | None:
    """``message`` of an error body ``{"message": …}``, or the body when it is text."""
    if isinstance(body, Mapping):
        message = body.get("message")
        return message if isinstance(message, str) else None
    return body if isinstance(body, str) else None


def clean_detail(text: Any, *secrets: str | None) -> str:
    """One line of the provider's message, secrets redacted, length bounded."""
    flat = " ".join(str(text).split()) if text is not None else ""
    return redact(flat or "no error message", *secrets)[:MAX_DETAIL_CHARS]


@dataclass(slots=True)
class _Cached(Generic[_C]):
    client: _C
    # An HTTP connection pool belongs to the event loop that opened it; a Lambda that runs
    # each invocation under a fresh ``asyncio.run`` must not reuse it on the next loop.
    loop: asyncio.AbstractEventLoop


class ClientCache(Generic[_C]):
    """One SDK client per credential set (API key, base URL) and event loop, reused.

    Credentials are resolved on every call, so a rotated secret takes effect at once and
    gets its own client; the old one is closed when the cache is.
    """

    def __init__(
        self,
        provider: str,
        resolver: CredentialResolver,
        *,
        default_base_url: str,
        build: Callable[[str, str], _C],
        close: Callable[[_C], Awaitable[None]],
    ) -> None:
        self._provider = provider
        self._resolver = resolver
        self._default_base_url = default_base_url
        self._build = build
        self._close = close
        self._clients: dict[tuple[str, str], _Cached[_C]] = {}

    async def get(self) -> tuple[_C, str, str]:
        """``(client, api_key, base_url)`` for the credentials in force now."""
        credentials = await self._resolver.resolve(self._provider)
        if not credentials.api_key:
            raise missing_key(self._provider)
        # Always passed to the SDK explicitly: left unset, it would read its own variable
        # from the process environment (once, at import) behind the resolver's back.
        base_url = credentials.base_url or self._default_base_url
        key = (credentials.api_key, base_url)
        loop = asyncio.get_running_loop()
        cached = self._clients.get(key)
        if cached is not None and cached.loop is not loop:
            if cached.loop.is_closed():
                await self._abandon(cached.client)
            cached = None
        if cached is None:
            cached = _Cached(self._build(credentials.api_key, base_url), loop)
            self._clients[key] = cached
        return cached.client, credentials.api_key, base_url

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        loop = asyncio.get_running_loop()
        for cached in clients.values():
            if cached.loop is loop:
                await self._close(cached.client)
            elif cached.loop.is_closed():
                await self._abandon(cached.client)

    async def _abandon(self, client: _C) -> None:
        # Its connections belong to a closed loop, so closing fails; trying anyway marks
        # the client closed so no finaliser schedules the same doomed close later.
        with contextlib.suppress(RuntimeError):
            await self._close(client)


async def timed(call: Awaitable[_T]) -> tuple[_T, float]:
    """The call's result and how long it took, in milliseconds."""
    started = time.perf_counter()
    result = await call
    return result, (time.perf_counter() - started) * 1000.0


class SdkAdapter(Generic[_C]):
    """An adapter over one vendor SDK client type: its client cache, and the one place
    where that SDK's exceptions become ours.

    A subclass names its default endpoint and supplies ``_build_client``,
    ``_close_client``, ``_vendor_errors`` and ``_translate``. The SDK's own retries stay
    off in ``_build_client``: the state machine's Retry owns retrying, so a 429 costs one
    call, not several.
    """

    default_name: ClassVar[str]
    default_base_url: ClassVar[str]

    def __init__(
        self,
        resolver: CredentialResolver,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        name: str | None = None,
    ) -> None:
        if timeout_seconds <= 0:
            raise ValueError("timeout_seconds must be positive")
        name = name or self.default_name
        self._name = name
        self._timeout_seconds = timeout_seconds
        self._clients: ClientCache[_C] = ClientCache(
            name,
            resolver,
            default_base_url=self.default_base_url,
            build=self._build_client,
            close=self._close_client,
        )

    @property
    def name(self) -> str:
        return self._name

    async def aclose(self) -> None:
        await self._clients.aclose()

    def _build_client(self, api_key: str, base_url: str) -> _C:
        raise NotImplementedError

    async def _close_client(self, client: _C) -> None:
        raise NotImplementedError

    def _vendor_errors(self) -> tuple[type[BaseException], ...]:
        """The SDK's exception types that ``_translate`` reads (imported lazily)."""
        raise NotImplementedError

    def _translate(self, exc: BaseException, api_key: str, base_url: str) -> ProviderError:
        raise NotImplementedError

    async def _call(self, call: Awaitable[_T], api_key: str, base_url: str) -> tuple[_T, float]:
        """The SDK call's result and latency in ms, its failures translated."""
        try:
            return await timed(call)
        except self._vendor_errors() as exc:
            error = self._translate(exc, api_key, base_url)
            # An SDK exception's text may quote request details or (part of) the key; keep
            # credentials out of tracebacks that end up in logs.
            raise error from (None if isinstance(error, ProviderAuthError) else exc)
        except (ValueError, TypeError):
            # A 2xx body that is not JSON (a truncated reply), or JSON the SDK cannot build
            # its model from: the SDKs let the decoder's or the model's error through.
            raise ProviderInvalidResponse(
                f"{self._name} returned a reply that is not valid JSON of the expected shape",
                provider=self._name,
            ) from None
