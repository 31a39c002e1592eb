"""Per-process HTTP request counts and the pure-ASGI middleware that feeds them.

Kept free of ``prometheus_client`` so that every Lambda can count requests without paying
for the library at cold start; only the monitoring group renders them (``prometheus.py``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)
UNMATCHED_ROUTE = "unmatched"
"""The route label of requests no route matched: raw paths would let any client create
unbounded series."""

RequestObserver = Callable[[str, int], None]
"""Told ``(route, status)`` of every request, e.g. to emit the same count as EMF on Lambda."""


class HttpRequestMetrics:
    """Requests served by this process, by route template and status.

    Per instance by nature: each Lambda container (and each local server) counts what it
    served and starts from zero, which Prometheus' ``rate()`` absorbs; fleet-wide request
    counts on AWS come from the EMF metrics the Lambda handlers emit through an observer.
    """

    def __init__(self) -> None:
        self._counts: dict[tuple[str, int], int] = {}
        self._observers: list[RequestObserver] = []

    def subscribe(self, observer: RequestObserver) -> None:
        self._observers.append(observer)

    def record(self, route: str, status: int) -> None:
        key = (route, status)
        self._counts[key] = self._counts.get(key, 0) + 1
        for observer in self._observers:
            try:
                observer(route, status)
            except Exception:  # a metrics sink must never turn a served request into an error
                log.exception("request metrics observer failed")

    def counts(self) -> dict[tuple[str, int], int]:
        """``(route, status)`` → requests, a copy."""
        return dict(self._counts)


class HttpMetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: HttpRequestMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets if the app raises before starting a response

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.record(route_template(scope), status)


def route_template(scope: Scope) -> str:
    """The matched route's full path template, e.g. ``/api/v1/workflows/{workflow_id}``.

    The router leaves the matched route in the scope. Recent FastAPI leaves the route as
    declared on its ``APIRouter``, without the prefix given to ``include_router``; that
    prefix is static text, so it is the part of the request path in front of the shortest
    tail the route's own pattern matches (an empty prefix where the route is already full).
    """
    route = scope.get("route")
    template = getattr(route, "path", None)
    if not isinstance(template, str):
        return UNMATCHED_ROUTE
    pattern = getattr(route, "path_regex", None)
    if not isinstance(pattern, re.Pattern):
        return template
    path = _route_path(scope)
    for start in (i for i, char in enumerate(path) if char == "/"):
        if pattern.match(path[start:]):
            return path[:start] + template
    return template


def _route_path(scope: Scope) -> str:
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", ""))
    return path[len(root) :] if root and path.startswith(root) else path
