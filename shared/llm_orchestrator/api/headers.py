"""Headers on every response: ``X-Request-ID`` (echo a sane client value, else generate
``req-<uuid>``) and the ``X-RateLimit-*`` status that the rate-limit dependency left in the
request state."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llm_orchestrator.store.deadlines import request_deadlines

REQUEST_ID_HEADER = "X-Request-ID"
_ACCEPTABLE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _choose(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _ACCEPTABLE.match(candidate):
                return candidate
            break
    return f"req-{uuid.uuid4()}"


def request_id_of(request: Request) -> str:
    state: Any = request.scope.setdefault("state", {})
    if "request_id" not in state:
        state["request_id"] = _choose(request.scope)
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
        request_id = state.setdefault("request_id", _choose(scope))
        # When the request arrived, for budgets that cover the whole request (health probes).
        state.setdefault("received_at", time.monotonic())

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                extra = {REQUEST_ID_HEADER: request_id, **state.get("rate_limit_headers", {})}
                for name, value in extra.items():
                    if name.lower().encode() not in present:
                        headers.append((name.lower().encode(), value.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        with request_deadlines():
            await self.app(scope, receive, send_with_headers)
