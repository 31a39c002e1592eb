"""Plain requests to the most frequent reads, answered without FastAPI's per-request work.

FastAPI resolves a route's dependencies and parameters anew on every request: for each
dependency a recursive solve with its cache key, for each query parameter (present or not)
a validation through pydantic, then the endpoint, then the response model. Before that, a
request passes through the middleware stack (eight layers) and the router, which tries the
routes one by one. On an authenticated ``GET /workflows`` that machinery cost more CPU than
the route's own work. So a route may name a *fast path*: ``plain``, which tells from the
raw request alone whether its parameters are plainly well-formed (and what they are), and
``serve``, which does exactly what the dependencies and the endpoint would do, in the same
order: the app-wide input check, the caller's authentication and permission, the endpoint's
body. Anything not plain goes to FastAPI untouched, so every refusal of a malformed request
is FastAPI's own. The answer is serialised through the route's response model just as
FastAPI does, unless the fast path built its JSON itself (a :class:`JsonBody`, the same
bytes), and the OpenAPI document is still generated from the route's declared signature.

A fast path is taken at two depths. :class:`HotReads` answers a plain request at the very
front of the app, ahead of the middleware stack and the router, and does itself what the
stack would have added (``X-Request-ID`` and the rate-limit headers, the request metrics,
the request deadlines, the error envelope of a refusal): see ``create_app``. A request the
front declines (a body, a root path, a method other than GET) still reaches its route
through the stack, where :class:`FastPathRoute` takes the same fast path.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Container, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from fastapi.exceptions import ResponseValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from llm_orchestrator.api.headers import choose_request_id, with_response_headers
from llm_orchestrator.metrics.http import HttpRequestMetrics
from llm_orchestrator.store.deadlines import request_deadlines

Q = TypeVar("Q")
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


@dataclass(frozen=True)
class FastPath(Generic[Q]):
    """``plain``: the request's parameters when plainly well-formed, else None (no I/O, no
    side effect); ``serve``: the endpoint's answer for them, dependencies included."""

    plain: Callable[[Request], Q | None]
    serve: Callable[[Request, Q], Awaitable[Any]]


def fast_path(
    plain: Callable[[Request], Q | None], serve: Callable[[Request, Q], Awaitable[Any]]
) -> Callable[[Endpoint], Endpoint]:
    """Declare the decorated endpoint's fast path (its route's class must be
    :class:`FastPathRoute`)."""

    def mark(endpoint: Endpoint) -> Endpoint:
        endpoint.fast_path = FastPath(plain, serve)  # type: ignore[attr-defined]
        return endpoint

    return mark


class JsonBody(bytes):
    """A fast path's answer already serialised, byte for byte what the route's response
    model makes of it (``api/schemas/plain_json.py``): passed through as it is."""


class _Serializer:
    """A route's answer as FastAPI's own handler serialises it (``serialize_response`` with
    ``dump_json``): validated against the response model, then JSON bytes."""

    def __init__(self, route: APIRoute) -> None:
        field = route.response_field
        assert field is not None
        self._field = field
        self.status_code = route.status_code or 200
        self._options: dict[str, Any] = {
            "include": route.response_model_include,
            "exclude": route.response_model_exclude,
            "by_alias": route.response_model_by_alias,
            "exclude_unset": route.response_model_exclude_unset,
            "exclude_defaults": route.response_model_exclude_defaults,
            "exclude_none": route.response_model_exclude_none,
        }

    def body(self, content: Any) -> bytes:
        if type(content) is JsonBody:
            return content
        value, errors = self._field.validate(content, {}, loc=("response",))
        if errors:
            raise ResponseValidationError(errors=errors, body=content)
        return self._field.serialize_json(value, **self._options)

    def __call__(self, content: Any) -> Response:
        return Response(
            content=self.body(content), status_code=self.status_code, media_type="application/json"
        )


def _fast_path_of(route: APIRoute) -> FastPath[Any] | None:
    answer: FastPath[Any] | None = getattr(route.endpoint, "fast_path", None)
    return answer if answer is not None and route.response_field is not None else None


class FastPathRoute(APIRoute):
    """An ``APIRoute`` whose endpoint's fast path, if it has one, answers first."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        full = super().get_route_handler()
        answer = _fast_path_of(self)
        if answer is None:
            return full
        serialize = _Serializer(self)

        async def handler(request: Request) -> Response:
            query = answer.plain(request)
            if query is None:
                return await full(request)
            return serialize(await answer.serve(request, query))

        return handler


@dataclass(frozen=True)
class _HotRoute:
    path: str
    """The full path template, as the request metrics name the route."""
    regex: Any
    route: APIRoute
    answer: FastPath[Any]
    serialize: _Serializer


class HotReads:
    """The front of the app: plain GETs of the routes with a fast path, answered before the
    middleware stack and the router; :meth:`take` says whether it answers a request.

    What the stack does for such a request, it does too, in the same order: the request id
    (a sane ``X-Request-ID`` echoed, else a new one) and its arrival time in the scope, the
    request deadlines around the work, the route's own path parameters and route in the
    scope, the domain errors answered by the app's exception handlers (the envelope, with
    ``WWW-Authenticate`` and ``Retry-After`` where due, 401/403 audited), ``X-Request-ID``
    and the ``X-RateLimit-*`` headers on the answer, the request counted in the metrics by
    route template and status; an unexpected error answers 500 in the envelope and is
    raised on for the server to log, as Starlette's outermost middleware does.
    """

    def __init__(
        self,
        prefix: str,
        routes: Sequence[APIRoute],
        metrics: HttpRequestMetrics,
        exception_handlers: dict[Any, Callable[..., Any]],
    ) -> None:
        self._routes: dict[str, list[_HotRoute]] = {}
        for route in routes:
            answer = _fast_path_of(route)
            if answer is None or "GET" not in (route.methods or ()):
                continue
            path = prefix + route.path
            hot = _HotRoute(path, compile_path(path)[0], route, answer, _Serializer(route))
            # Keyed by the path's first segments, so a request is matched against at most
            # the one or two hot routes that share its start.
            self._routes.setdefault(_head(path), []).append(hot)
        self._server = FrontServer(metrics, exception_handlers)

    async def answer(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer the request if it is a plain GET of a hot route (True); else do nothing
        at all (False), and the stack answers it."""
        if scope["method"] != "GET" or scope.get("root_path"):
            return False
        path: str = scope["path"]
        for hot in self._routes.get(_head(path), ()):
            match = hot.regex.match(path)
            if match is not None:
                break
        else:
            return False
        for name, _ in scope["headers"]:
            if name in (b"content-length", b"transfer-encoding"):
                return False  # a body to bound and drain: the stack's job
        # The router would set the same path parameters (the hot routes are matched first
        # by no other route: tested).
        scope["path_params"] = match.groupdict()
        request = Request(scope, receive)
        query = hot.answer.plain(request)
        if query is None:
            return False
        await self._server.serve(app, hot, request, query, send)
        return True


class FrontServer:
    """How the app's fronts (:class:`HotReads`, ``api/hot_writes.HotWrites``) answer a
    request they take, as the middleware stack and the router would (see
    :class:`HotReads`)."""

    def __init__(
        self, metrics: HttpRequestMetrics, exception_handlers: dict[Any, Callable[..., Any]]
    ) -> None:
        self._metrics = metrics
        self._handlers = exception_handlers

    async def serve(
        self, app: ASGIApp, hot: _HotRoute, request: Request, query: Any, send: Send
    ) -> None:
        scope = request.scope
        scope["app"] = app
        state = scope.setdefault("state", {})
        state.setdefault("request_id", choose_request_id(scope))
        state.setdefault("received_at", time.monotonic())
        scope["route"] = hot.route
        scope["endpoint"] = hot.route.endpoint
        status = 500
        try:
            with request_deadlines():
                try:
                    body = hot.serialize.body(await hot.answer.serve(request, query))
                except Exception as exc:
                    handler = self._handler(exc)
                    if handler is None:
                        await self._fail(request, exc, send)
                        raise
                    response: Response = await handler(request, exc)
                    headers = with_response_headers(response.raw_headers, state)
                    status, body = response.status_code, bytes(response.body)
                else:
                    # What Starlette's ``Response`` and ``with_response_headers`` make of
                    # it (neither header of the first is one of the second's).
                    headers = [
                        (b"content-length", b"%d" % len(body)),
                        (b"content-type", b"application/json"),
                        (b"x-request-id", state["request_id"].encode("latin-1")),
                    ]
                    for name, value in state.get("rate_limit_headers", {}).items():
                        headers.append((name.lower().encode(), value.encode("latin-1")))
                    status = hot.serialize.status_code
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        finally:
            self._metrics.record(hot.path, status)

    def _handler(self, exc: Exception) -> Callable[..., Any] | None:
        """The app's handler of ``exc`` as Starlette's ``ExceptionMiddleware`` looks it up
        (the handler of ``Exception`` is the outermost middleware's, not its)."""
        for klass in type(exc).__mro__:
            if klass is Exception:
                return None
            if klass in self._handlers:
                return self._handlers[klass]
        return None

    async def _fail(self, request: Request, exc: Exception, send: Send) -> None:
        """Starlette's ``ServerErrorMiddleware``: the app's handler of unexpected errors
        answers (without rate-limit headers: that middleware sits outside ours); with no
        handler, the server answers its own 500."""
        unexpected = self._handlers.get(Exception) or self._handlers.get(500)
        if unexpected is None:
            return
        response: Response = await unexpected(request, exc)
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response.raw_headers,
            }
        )
        await send({"type": "http.response.body", "body": response.body})


def _head(path: str) -> str:
    """The first four segments of a path (``/api/v1/workflows/…`` → ``/api/v1/workflows``)."""
    return "/".join(path.split("/", 4)[:4])


def once_per_request(plain: Callable[[Request], Q | None]) -> Callable[[Request], Q | None]:
    """``plain``, remembered in the request's scope: a route asks it twice (whether to take
    the fast path, then for the read that rides on the authentication)."""
    key = f"llmo.plain.{plain.__module__}.{plain.__qualname__}"

    def remembered(request: Request) -> Q | None:
        scope = request.scope
        if key in scope:
            known: Q | None = scope[key]
            return known
        answer = scope[key] = plain(request)
        return answer

    return remembered


def plain_query(request: Request, names: Container[str]) -> dict[str, str] | None:
    """The query's values by name when every parameter is one of ``names`` and given once;
    None otherwise."""
    query = request.query_params
    items = query.multi_items()
    if len(items) != len(query) or not all(name in names for name, _ in items):
        return None
    return dict(items)


def plain_int(text: str | None, default: int, lowest: int, highest: int) -> int | None:
    """``text`` as an int in ``lowest..highest`` (``default`` when absent), if written as
    plain ASCII digits; None for anything else."""
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        return None
    value = int(text)
    return value if lowest <= value <= highest else None
