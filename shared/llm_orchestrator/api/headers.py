"""Headers on every response: ``X-Request-ID`` (echo a sane client value, else generate
``req-<uuid>``) and the ``X-RateLimit-*`` status that the rate-limit dependency left in the
request state."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from random import getrandbits
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llm_orchestrator.store.deadlines import request_deadlines

REQUEST_ID_HEADER = "X-Request-ID"
_ACCEPTABLE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def choose_request_id(scope: Scope) -> str:
    """A sane client ``X-Request-ID``, else a new ``req-<uuid>``."""
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _ACCEPTABLE.match(candidate):
                return candidate
            break
    return f"req-{new_request_id()}"


def new_request_id() -> str:
    """A version-4 UUID's text from ``random``'s generator: unique across processes like
    ``uuid4()`` (the generator is seeded from the OS at start and again in a forked child)
    without a system call per request for 16 random bytes. A request id is a label for
    logs, not a secret."""
    bits = (getrandbits(128) & ~_NOT_V4) | _V4
    text = f"{bits:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


# The version (4) and variant (RFC 4122) bits, as ``uuid.UUID(version=4)`` sets them.
_NOT_V4 = (0xF000 << 64) | (0xC000 << 48)
_V4 = (0x4000 << 64) | (0x8000 << 48)


def request_id_of(request: Request) -> str:
    state: Any = request.scope.setdefault("state", {})
    if "request_id" not in state:
        state["request_id"] = choose_request_id(request.scope)
    return str(state["request_id"])


class ResponseHeadersMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware overhead on every request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state.setdefault("request_id", choose_request_id(scope))
        # When the request arrived, for budgets that cover the whole request (health probes).
        state.setdefault("received_at", time.monotonic())

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = with_response_headers(message.get("headers", []), state)
            await send(message)

        with request_deadlines():
            await self.app(scope, receive, send_with_headers)


def with_response_headers(
    headers: Iterable[tuple[bytes, bytes]], state: Mapping[str, Any]
) -> list[tuple[bytes, bytes]]:
    """``headers`` with ``X-Request-ID`` and the ``X-RateLimit-*`` status of the request
    (``state``: the scope's) added, each unless the response already has it."""
    out = list(headers)
    present = {name.lower() for name, _ in out}
    extra = {REQUEST_ID_HEADER: state["request_id"], **state.get("rate_limit_headers", {})}
    for name, value in extra.items():
        if name.lower().encode() not in present:
            out.append((name.lower().encode(), value.encode("latin-1")))
    return out
