"""What the fake provider servers share: a real HTTP server on a thread, failure
injection, latency, a request log, HTTP controls and the ``--port`` command line.

A vendor fake subclasses :class:`FakeProviderServer` and supplies its API routes, its
error body shape and its authentication check. Controls mirror ``FakeOpenAI``:
``fail_next(status, times=, retry_after=, message=)``, ``latency``, ``latency_of``,
``responder``, ``requests_to(path)``, ``reset()``; over HTTP ``POST /_fake/failures``,
``POST /_fake/latency``, ``GET /_fake/requests``, ``POST /_fake/reset``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, ClassVar, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.embeddings import DEFAULT_DIM

__all__ = ["FakeProviderServer", "InjectedFailure", "RecordedRequest", "serve_from_command_line"]

Responder = Callable[[dict[str, Any]], str]
# Recorded with their values masked: the request log is served over HTTP.
_CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key"})
Handler = Callable[[Request, Any], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class InjectedFailure:
    status: int
    message: str
    type: str | None
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class RawReply:
    status: int
    body: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the fake saw it; times are ``time.monotonic()`` on this machine."""

    method: str
    path: str
    body: Any
    headers: dict[str, str]
    client: str
    """``host:port`` of the caller: the same for requests over one kept-alive connection."""
    status: int
    started_at: float
    finished_at: float

    @property
    def has_auth(self) -> bool:
        return "authorization" in self.headers or "x-api-key" in self.headers


class FakeProviderServer:
    """The server plus its run-time controls and request log (subclass per vendor)."""

    name: ClassVar[str] = "fake"
    ready_prefix: ClassVar[str] = "FAKE_READY"
    api_prefix: ClassVar[str] = "/v1"
    """Requests under this prefix are the API: gated by failures, auth and latency."""
    error_defaults: ClassVar[dict[int, tuple[str, str]]] = {}
    """status → (error type, message), the vendor's own wording."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        latency: float = 0.0,
        embedding_dim: int = DEFAULT_DIM,
    ) -> None:
        self._initial = (api_key, latency, embedding_dim)
        self.api_key = api_key
        """When set, requests without this key get the vendor's 401."""
        self.latency = latency
        """Seconds every API request waits before answering."""
        self.embedding_dim = embedding_dim
        self.responder: Responder | None = None
        """Chooses the reply text from the JSON request body; default: ``echo: <prompt>``."""
        self.latency_of: Callable[[Any], float | None] | None = None
        """Chooses one request's latency from its JSON body (None: use ``latency``)."""
        self._lock = threading.Lock()
        self._failures: deque[InjectedFailure] = deque()
        self._raw_replies: deque[RawReply] = deque()
        self._log: list[RecordedRequest] = []
        self._ids = itertools.count(1)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._host = "127.0.0.1"
        self.app = self._build_app()

    # -- to supply per vendor ----------------------------------------------------------

    def api_routes(self) -> list[tuple[str, Handler, list[str]]]:
        raise NotImplementedError

    def error_response(
        self,
        status: int,
        message: str,
        *,
        type_: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        raise NotImplementedError

    def authorised(self, request: Request) -> Response | None:
        """None when the request carries ``api_key`` (or no key is required)."""
        raise NotImplementedError

    @property
    def base_url(self) -> str:
        """What the vendor's SDK takes as ``base_url``."""
        return self.url

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        latency: float = 0.0,
        embedding_dim: int = DEFAULT_DIM,
    ) -> Self:
        """Serve on ``host:port`` (0: any free port) from a background thread."""
        fake = cls(api_key=api_key, latency=latency, embedding_dim=embedding_dim)
        fake._serve(host, port)
        return fake

    def _serve(self, host: str, port: int) -> None:
        self._host = host
        # Binding here rather than in uvicorn tells us the ephemeral port before it starts.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            loop="asyncio",
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=f"fake-{self.name}", daemon=True
        )
        self._server, self._thread, self._socket = server, thread, sock
        thread.start()
        deadline = time.monotonic() + 10.0
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"fake {self.name} server failed to start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError(f"the fake {self.name} server is not running")
        port: int = self._socket.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    # -- controls ----------------------------------------------------------------------

    def fail_next(
        self,
        status: int = 500,
        *,
        times: int = 1,
        retry_after: float | None = None,
        message: str | None = None,
        error_type: str | None = None,
    ) -> None:
        """Answer the next ``times`` API requests with this vendor-shaped error."""
        default_type, default_message = self.error_defaults.get(status, (None, f"HTTP {status}"))
        failure = InjectedFailure(
            status=status,
            message=message or default_message,
            type=error_type or default_type,
            retry_after=retry_after,
        )
        with self._lock:
            self._failures.extend([failure] * times)

    def reply_next(
        self,
        body: str | bytes,
        *,
        status: int = 200,
        content_type: str = "application/json",
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` API requests with exactly this body (a malformed or
        truncated reply), after authentication like a real answer."""
        raw = body.encode() if isinstance(body, str) else body
        with self._lock:
            self._raw_replies.extend([RawReply(status, raw, content_type)] * times)

    def reset(self) -> None:
        """Forget requests and pending failures; restore the controls given at start."""
        self.api_key, self.latency, self.embedding_dim = self._initial
        self.responder = None
        self.latency_of = None
        with self._lock:
            self._failures.clear()
            self._raw_replies.clear()
            self._log.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._log)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    def next_id(self) -> int:
        return next(self._ids)

    # -- the app -----------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        routes = [
            Route(path, self._recorded(handler), methods=methods)
            for path, handler, methods in self.api_routes()
        ]
        routes += [
            Route("/_fake/failures", self._control_failures, methods=["POST"]),
            Route("/_fake/latency", self._control_latency, methods=["POST"]),
            Route("/_fake/requests", self._control_requests, methods=["GET"]),
            Route("/_fake/reset", self._control_reset, methods=["POST"]),
            Route(
                "/{path:path}",
                self._recorded(self._not_found),
                methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            ),
        ]
        return Starlette(routes=routes)

    def _recorded(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            started = time.monotonic()
            body: Any = None
            raw = await request.body()
            if raw:
                try:
                    body = await request.json()
                except ValueError:
                    body = raw.decode(errors="replace")
            response = await self._gate(request) or await handler(request, body)
            record = RecordedRequest(
                method=request.method,
                path=request.url.path,
                body=body,
                headers={
                    name: (masked(value) if name in _CREDENTIAL_HEADERS else value)
                    for name, value in ((k.lower(), v) for k, v in request.headers.items())
                },
                client=f"{request.client.host}:{request.client.port}" if request.client else "",
                status=response.status_code,
                started_at=started,
                finished_at=time.monotonic(),
            )
            with self._lock:
                self._log.append(record)
            return response

        return endpoint

    async def _gate(self, request: Request) -> Response | None:
        """Injected failures first (so tests control the outcome), then auth, then latency."""
        if not request.url.path.startswith(self.api_prefix):
            return None
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            headers = (
                {"retry-after": f"{failure.retry_after:g}"}
                if failure.retry_after is not None
                else None
            )
            return self.error_response(
                failure.status, failure.message, type_=failure.type, headers=headers
            )
        refused = self.authorised(request)
        if refused is not None:
            return refused
        # Taken before the latency, so a request still waiting out an earlier test's
        # latency cannot answer with the reply queued for this one.
        with self._lock:
            raw = self._raw_replies.popleft() if self._raw_replies else None
        chosen = self.latency_of(await _json_or_none(request)) if self.latency_of else None
        latency = self.latency if chosen is None else chosen
        if latency > 0:
            await asyncio.sleep(latency)
        if raw is not None:
            return Response(raw.body, status_code=raw.status, media_type=raw.content_type)
        return None

    async def _not_found(self, request: Request, body: Any) -> Response:
        return self.error_response(
            404, f"Not found: {request.method} {request.url.path}", type_="not_found_error"
        )

    async def _control_failures(self, request: Request) -> Response:
        try:
            self.fail_next(**await request.json())
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": f"bad failure spec: {exc}"}, status_code=400)
        return JSONResponse({"ok": True})

    async def _control_latency(self, request: Request) -> Response:
        self.latency = float((await request.json())["seconds"])
        return JSONResponse({"ok": True})

    async def _control_requests(self, request: Request) -> Response:
        return JSONResponse([asdict(r) for r in self.requests])

    async def _control_reset(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"ok": True})


async def _json_or_none(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        return None


def masked(key: str) -> str:
    return f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "***"


def serve_from_command_line(cls: type[FakeProviderServer], argv: list[str] | None = None) -> None:
    """``python -m tests.fakes.<name> --port N``: serve until SIGTERM/SIGINT.

    Prints ``<READY_PREFIX> <base_url>`` once the server accepts connections.
    """
    parser = argparse.ArgumentParser(description=f"A fake {cls.name} API for tests and demos.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--api-key", default=None, help="require this key")
    parser.add_argument("--embedding-dim", type=int, default=DEFAULT_DIM)
    args = parser.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    fake = cls.start(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        latency=args.latency,
        embedding_dim=args.embedding_dim,
    )
    try:
        print(f"{cls.ready_prefix} {fake.base_url}", flush=True)
        stop.wait()
    finally:
        fake.stop()
