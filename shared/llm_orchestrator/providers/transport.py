"""The HTTP transport under the OpenAI, Anthropic and Cohere SDKs' async clients.

OpenAI's and Anthropic's SDKs send through an ``httpx2.AsyncClient``, Cohere's through an
``httpx.AsyncClient``, each by default over that package's own transport (httpcore). That
transport is most of a provider call's CPU, and its connection pool does work
proportional to (waiting requests x open connections) whenever a request starts or ends,
so hundreds of concurrent calls through one client cost more CPU than the calls
themselves. Each SDK also ships an aiohttp transport under the same client class (its
``aiohttp`` extra). Measured through these adapters against the fake servers in one
process, alternating: an OpenAI call 1.4 ms of CPU sequentially against 2.1 ms, and 500
concurrent calls through ONE client 1.1-1.3 ms each against 1.6-2.2 ms through httpx2
clients sharded 64 ways; Anthropic's typed client 1.4-2.0 against 2.4-2.8 ms, and 1.6-1.9
against 5.5-6 ms in one client; a Cohere call 1.2-2.2 against 2.4-2.8 ms.

Which one a process uses follows from what is installed, not from a setting:

- The long-running server (``llmo serve``; the ``server`` extra installs the SDKs'
  ``aiohttp`` extras) uses aiohttp for every client.
- The Lambda step runner's bundle (the ``providers`` extra) leaves aiohttp out: a Lambda
  makes one call at a time, where the difference is under a millisecond, while importing
  aiohttp costs ~220 ms of a cold start (the SDKs import it at their own import whenever
  it is installed). Its clients use the httpx transports.

Nothing here imports an SDK or aiohttp: ``aiohttp_installed`` only looks for it.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import urlsplit

from .base import CredentialResolver
from .common import DEFAULT_TIMEOUT_SECONDS, SdkAdapter

if TYPE_CHECKING:
    import ssl

__all__ = [
    "SDK_PLATFORM_HEADERS",
    "HttpxSdkAdapter",
    "Transport",
    "aiohttp_connection_failure",
    "aiohttp_installed",
    "default_transport",
    "shared_ssl_context",
]

Transport = Literal["aiohttp", "httpx"]
"""``aiohttp``: the SDK's aiohttp transport; ``httpx``: httpx2's own (httpcore2)."""

log = logging.getLogger(__name__)

SDK_PLATFORM_HEADERS = (
    "X-Stainless-Lang",
    "X-Stainless-Package-Version",
    "X-Stainless-OS",
    "X-Stainless-Arch",
    "X-Stainless-Runtime",
    "X-Stainless-Runtime-Version",
    "X-Stainless-Async",
)
"""The headers in which OpenAI's and Anthropic's SDKs describe the platform on every request
(language, SDK version, OS, CPU, runtime): nothing an endpoint answers differently for.
Each is built into every request, then converted by each layer below (the SDK's headers,
httpx2's, aiohttp's, the wire): left out through the SDK's documented ``omit``, a call costs
5-9% less CPU, measured over aiohttp. ``User-Agent`` still names the SDK and its version."""

_C = TypeVar("_C")

_ssl_context: ssl.SSLContext | None = None
_aiohttp_installed: bool | None = None


def aiohttp_installed() -> bool:
    """Whether aiohttp can be imported (looked up once, without importing it)."""
    global _aiohttp_installed
    if _aiohttp_installed is None:
        try:
            _aiohttp_installed = importlib.util.find_spec("aiohttp") is not None
        except (ImportError, ValueError):  # blocked in sys.modules, or a broken install
            _aiohttp_installed = False
    return _aiohttp_installed


def default_transport() -> Transport:
    """aiohttp where it is installed (the server), httpx2's transport elsewhere (Lambda)."""
    return "aiohttp" if aiohttp_installed() else "httpx"


def shared_ssl_context() -> ssl.SSLContext:
    """The TLS context every client of this process verifies servers with, built as the
    SDKs' own transports build it (httpx2's: the same trust store and environment).

    Built once: left to itself, each client builds its own when it is created, loading the
    whole CA bundle (~25 ms of CPU, measured). Both transports take a ready context, and a
    context is safe to share between connections, clients and event loops."""
    global _ssl_context
    if _ssl_context is None:
        try:  # the transport package of the SDKs' current releases
            from httpx2 import create_ssl_context
        except ImportError:  # earlier releases use httpx
            from httpx import create_ssl_context
        _ssl_context = create_ssl_context()
    return _ssl_context


def aiohttp_connection_failure(exc: BaseException) -> BaseException | None:
    """The aiohttp error behind ``exc`` when it is a failed or dropped connection rather
    than a timeout, else None.

    The OpenAI SDK's copy of the aiohttp transport maps every
    ``aiohttp.ClientConnectionError`` (a refused connection, a reset, a server that hung
    up) to ``httpx2.ConnectTimeout``, so the SDK reports it as a timeout; the error it was
    raised from says what happened. (Anthropic's copy maps them to ``ConnectError``.)"""
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is None:
        return None
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, aiohttp.ClientError):
            return None if isinstance(cause, TimeoutError) else cause
        cause = cause.__cause__
    return None


def _has_credentials(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return parts.username is not None or parts.password is not None
    except ValueError:
        return False


class HttpxSdkAdapter(SdkAdapter[_C]):
    """An adapter over an SDK whose client sends through httpx2 and ships the aiohttp
    transport (OpenAI's, Anthropic's): each client it builds uses ``transport``, by
    default aiohttp where installed, and the process's one TLS context."""

    def __init__(
        self,
        resolver: CredentialResolver,
        *,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        name: str | None = None,
        transport: Transport | None = None,
    ) -> None:
        super().__init__(resolver, timeout_seconds=timeout_seconds, name=name)
        self._transport: Transport = transport or default_transport()

    @property
    def transport(self) -> Transport:
        """The HTTP transport under this adapter's clients."""
        return self._transport

    def _http_client(self, sdk: ModuleType, base_url: str) -> Any:
        """The SDK's own HTTP client class (its limits and redirect defaults) over this
        adapter's transport, verifying servers with the shared TLS context.

        An endpoint with ``user:password@`` gets httpx2's transport whatever the adapter's:
        httpx2 turns those credentials into the request's ``Authorization`` header but
        leaves them in the URL, and aiohttp refuses a URL's credentials next to that
        header (a ValueError for every call)."""
        if self._transport == "aiohttp" and not _has_credentials(base_url):
            try:
                return sdk.DefaultAioHttpClient(
                    verify=shared_ssl_context(), timeout=self._timeout_seconds
                )
            except (AttributeError, RuntimeError) as exc:
                # aiohttp is there but this SDK cannot use it (a release without the
                # transport, or an aiohttp it does not support).
                log.warning(
                    "%s: the SDK's aiohttp transport is unavailable (%s); using httpx2's",
                    self._name,
                    exc,
                )
                self._transport = "httpx"
        return self._httpx_client(sdk)

    def _default_headers(self, sdk: ModuleType) -> dict[str, Any]:
        """The client's ``default_headers``: the SDK's platform headers left out."""
        return dict.fromkeys(SDK_PLATFORM_HEADERS, sdk.Omit())

    def _httpx_client(self, sdk: ModuleType) -> Any:
        """The SDK's own HTTP client class over httpx's transport."""
        return sdk.DefaultAsyncHttpxClient(
            verify=shared_ssl_context(), timeout=self._timeout_seconds
        )
