"""Plain submits of the hottest write (``POST /workflows/{id}/execute``), answered at the
app's front, ahead of the middleware stack and the router.

A burst of submits spent a third of the server's CPU in FastAPI's per-request machinery
(eight middleware layers, the router, the dependency solve) rather than in the submit's own
work. A route may name a *front post* (:func:`front_post`): ``plain``, which tells from the
raw request and its JSON body alone whether the request is plainly well-formed (and what
its body means), and ``serve``, which does exactly what the route's dependencies and
endpoint would do, in the same order. :class:`HotWrites` reads the body of a POST to such
a route; when ``plain`` accepts it, the request is answered as :class:`HotReads` answers a
hot read (the request id, the deadlines, the error envelope through the app's exception
handlers, ``X-Request-ID`` and the ``X-RateLimit-*`` headers, the request metrics);
anything else goes to the stack with its body replayed, untouched, so every refusal of a
malformed request (bad JSON, a body the model refuses, a body too large) is FastAPI's own.

What the front takes: a POST with ``Content-Type: application/json`` (exactly), a
``Content-Length`` within the body limit and no ``Transfer-Encoding``, with no root path
and no OpenTelemetry tracing on (the app decides the last).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi.dependencies.utils import _validate_value_with_model_field
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llm_orchestrator.api.fast_path import FastPath, FrontServer, _HotRoute, _Serializer
from llm_orchestrator.metrics.http import HttpRequestMetrics

Q = TypeVar("Q")
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
Stack = Callable[[Scope, Receive, Send], Awaitable[None]]

JSON_MEDIA_TYPE = b"application/json"


def front_post(
    plain: Callable[[Request, Any], Q | None], serve: Callable[[Request, Q], Awaitable[Any]]
) -> Callable[[Endpoint], Endpoint]:
    """Declare the decorated POST endpoint's front path: ``plain(request, body)`` gets the
    body as FastAPI validated it against the route's body model (only a body it accepts)
    and says whether the request is plain (its answer, else None: no I/O, no side effect);
    ``serve(request, answer)`` is the route's answer, dependencies included, with the
    route's status code."""

    def mark(endpoint: Endpoint) -> Endpoint:
        endpoint.front_post = _FrontPost(plain, serve)  # type: ignore[attr-defined]
        return endpoint

    return mark


@dataclass(frozen=True)
class _FrontPost:
    plain: Callable[[Request, Any], Any]
    serve: Callable[[Request, Any], Awaitable[Any]]


@dataclass(frozen=True)
class _HotWrite:
    hot: _HotRoute
    plain: Callable[[Request, Any], Any]
    body_field: Any


class HotWrites:
    """The front of the app for the POST routes with a front path (see the module's
    docstring); :meth:`answer` answers a request to one of them, on the front or through
    the stack."""

    def __init__(
        self,
        prefix: str,
        routes: Sequence[APIRoute],
        metrics: HttpRequestMetrics,
        exception_handlers: dict[Any, Callable[..., Any]],
        max_body_bytes: int,
    ) -> None:
        self._routes: list[_HotWrite] = []
        for route in routes:
            front: _FrontPost | None = getattr(route.endpoint, "front_post", None)
            if (
                front is None
                or "POST" not in (route.methods or ())
                or route.body_field is None
                or route.response_field is None
            ):
                continue
            path = prefix + route.path
            answer = FastPath(lambda _: None, front.serve)
            hot = _HotRoute(path, compile_path(path)[0], route, answer, _Serializer(route))
            self._routes.append(_HotWrite(hot, front.plain, route.body_field))
        # What answers a plain request, as a hot read is answered.
        self._server = FrontServer(metrics, exception_handlers)
        self._max_body_bytes = max_body_bytes

    def __bool__(self) -> bool:
        return bool(self._routes)

    async def answer(
        self, app: ASGIApp, scope: Scope, receive: Receive, send: Send, stack: Stack
    ) -> bool:
        """Answer a POST to a route with a front path, on the front when it is plain, else
        through ``stack`` (the body replayed) (True); do nothing at all for any other
        request (False)."""
        if scope["method"] != "POST" or scope.get("root_path"):
            return False
        path: str = scope["path"]
        for write in self._routes:
            match = write.hot.regex.match(path)
            if match is not None:
                break
        else:
            return False
        length = self._plain_length(scope["headers"])
        if length is None:
            return False
        body, messages = await _read_body(receive, length)
        replay = _replaying(messages, receive)
        if body is None:
            await stack(scope, replay, send)
            return True
        scope["path_params"] = match.groupdict()
        request = Request(scope, replay)
        query = self._plain(request, write, body)
        if query is None:
            await stack(scope, replay, send)
            return True
        await self._server.serve(app, write.hot, request, query, send)
        return True

    def _plain_length(self, headers: Sequence[tuple[bytes, bytes]]) -> int | None:
        """The body's declared length if the headers are plain (a JSON body of a length
        within the limit, no chunked encoding); None otherwise."""
        length: int | None = None
        json_body = False
        for name, value in headers:
            if name == b"content-length":
                if length is not None or not value.isdigit():
                    return None
                length = int(value)
            elif name == b"content-type":
                if json_body:
                    return None
                json_body = value.lower() == JSON_MEDIA_TYPE
            elif name == b"transfer-encoding":
                return None
        if not json_body or length is None or not 0 < length <= self._max_body_bytes:
            return None
        return length

    @staticmethod
    def _plain(request: Request, write: _HotWrite, body: bytes) -> Any:
        """The route's ``plain`` answer for a body FastAPI would parse and validate as this
        does (``json.loads``, then the body field); None for anything else."""
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            return None
        value, errors = _validate_value_with_model_field(
            field=write.body_field, value=parsed, values={}, loc=("body",)
        )
        if errors:
            return None
        # What FastAPI caches on its own request: the app-wide input check reads both.
        request._body = body
        request._json = parsed
        return write.plain(request, value)


async def _read_body(receive: Receive, length: int) -> tuple[bytes | None, list[Message]]:
    """The body, read whole (None if the client went away or sent other than ``length``
    bytes), and the messages received, for the stack to be given them again."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, messages
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > length:
            return None, messages
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if received != length:
        return None, messages
    return b"".join(chunks), messages


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """``receive``, after the messages already received are given again, in order."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
