"""What every fake server shares: a real HTTP server on a thread, failure injection,
latency, holding calls, a request log, HTTP controls and the ``--port`` command line.

A vendor fake subclasses :class:`FakeServer` (vector databases) or
:class:`FakeProviderServer` (LLM and embedding providers) and supplies its API routes, its
error body shape and its authentication check, so the official SDK sees the vendor's
real wire protocol. Controls, in-process: ``fail_next(status, times=, retry_after=,
message=)``, ``reply_next(body)``, ``latency``, ``latency_of``, ``hold()`` /
``release()``, ``requests`` / ``requests_to(path)``, ``reset()``, and for providers
``answer_next(value)`` (what the next structured-output request gets instead of a value
generated from its schema); over HTTP ``POST /_fake/failures`` (the keyword arguments of
``fail_next``), ``POST /_fake/latency`` (``{"seconds": 0.5}``), ``GET /_fake/requests``,
``POST /_fake/reset``, ``POST /_fake/answers`` (``{"value": …, "times": 1}``).

Latency is an ``asyncio.sleep`` on the server's one event loop, so hundreds of concurrent
requests wait together. Controls are plain attributes, settable while the server runs.
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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, ClassVar, NamedTuple, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from tests.fakes.embeddings import DEFAULT_DIM
from tests.fakes.schema_values import example_value

__all__ = [
    "ErrorDefault",
    "FakeProviderServer",
    "FakeServer",
    "Handler",
    "InjectedFailure",
    "PromptServer",
    "RecordedRequest",
    "masked",
    "serve_from_command_line",
]

Handler = Callable[[Request, Any], Awaitable[Response]]
"""An API route: the request and its body (parsed JSON, else text, else None)."""
Responder = Callable[[dict[str, Any]], str]
# Recorded with their values masked: the request log is served over HTTP.
_CREDENTIAL_HEADERS = frozenset({"authorization", "x-api-key", "api-key"})
_ECHO_LIMIT = 200


class PromptServer(uvicorn.Server):
    """A uvicorn server on a test's thread that stops as soon as :meth:`exit` is called.

    uvicorn looks at ``should_exit`` every 0.1 s, then its shutdown sleeps 0.1 s and polls its
    connections every 0.1 s: up to 0.3 s idle per stop, paid by every test that starts a
    server. Here ``exit()`` wakes the main loop, and shutdown waits for the connections and
    request tasks themselves to end (within ``timeout_graceful_shutdown``, as uvicorn)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()

    def exit(self) -> None:
        """Ask the server to stop; safe from any thread, before or after it started."""
        self.should_exit = True
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # its loop has closed: the server has stopped already
                pass

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864_000
            # on_tick refreshes the Date header once per 10 ticks: keep its 0.1 s rhythm.
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=0.1)
            except TimeoutError:
                pass
            should_exit = await self.on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        state = self.server_state
        for connection in list(state.connections):
            connection.shutdown()  # idle ones close now, busy ones after their response
        try:
            async with asyncio.timeout(self.config.timeout_graceful_shutdown):
                while state.connections or state.tasks:
                    await asyncio.sleep(0.005)
                for server in self.servers:
                    await server.wait_closed()
        except TimeoutError:
            for task in state.tasks:
                task.cancel(msg="Task cancelled, timeout graceful shutdown exceeded")
        if not self.force_exit:
            await self.lifespan.shutdown()


class ErrorDefault(NamedTuple):
    """A vendor's own wording for an HTTP status, so SDK parsing sees familiar bodies."""

    type: str | None
    message: str
    code: str | None = None


@dataclass(frozen=True, slots=True)
class InjectedFailure:
    status: int
    message: str
    type: str | None
    code: str | None
    retry_after: float | str | None


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
    """Lower-cased names; credential values masked."""
    client: str
    """``host:port`` of the caller: the same for requests over one kept-alive connection."""
    status: int
    started_at: float
    finished_at: float

    @property
    def has_auth(self) -> bool:
        return any(name in self.headers for name in _CREDENTIAL_HEADERS)


class _Held:
    """One request waiting in ``hold``; opened from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()
        self._failure: int | None = None

    def open(self, failure: int | None) -> None:
        self._failure = failure
        self._loop.call_soon_threadsafe(self._event.set)

    async def wait(self) -> int | None:
        await self._event.wait()
        return self._failure


class FakeServer:
    """The server plus its run-time controls and request log (subclass per vendor)."""

    name: ClassVar[str] = "fake"
    ready_prefix: ClassVar[str] = "FAKE_READY"
    api_prefix: ClassVar[str] = "/"
    """Requests under this prefix are the API: gated by failures, auth, latency and hold."""
    answers_unknown_paths: ClassVar[bool] = False
    """Whether an unrouted path gets the vendor's 404 (recorded) rather than Starlette's."""
    error_defaults: ClassVar[Mapping[int, ErrorDefault]] = {}
    """status → the vendor's own error type, message and code."""
    failure_message: ClassVar[str] = "injected failure {status}"
    """The message of an injected failure whose status has no vendor wording."""

    def __init__(self, *, api_key: str | None = None, latency: float = 0.0) -> None:
        self._initial_api_key, self._initial_latency = api_key, latency
        self.api_key = api_key
        """When set, requests must carry it the vendor's way, or get the vendor's 401."""
        self.latency = latency
        """Seconds every API request waits before answering."""
        self.latency_of: Callable[[Any], float | None] | None = None
        """Chooses one request's latency from its body (None: use ``latency``)."""
        self._lock = threading.Lock()
        self._failures: deque[InjectedFailure] = deque()
        self._raw_replies: deque[RawReply] = deque()
        self._hold: Callable[[Any], bool] | None = None
        self._held: list[_Held] = []
        self._log: list[RecordedRequest] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._ids = itertools.count(1)
        self._server: PromptServer | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._host = "127.0.0.1"
        self.app = Starlette(routes=self._routes())

    # -- to supply per vendor ----------------------------------------------------------

    def api_routes(self) -> list[tuple[str, Handler, list[str]]]:
        raise NotImplementedError

    def error_response(
        self,
        status: int,
        message: str,
        *,
        type_: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """The vendor's error body for ``status``."""
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def authorised(self, request: Request) -> Response | None:
        """None when the request may go on; else the vendor's refusal."""
        if self.api_key is None or self.key_accepted(request):
            return None
        return self.error_response(401, "Invalid API key")

    def key_accepted(self, request: Request) -> bool:
        """Whether the request carries ``api_key`` the vendor's way (when one is set)."""
        return True

    def gated(self, request: Request) -> bool:
        """Whether failures, auth, latency and holds apply to this request."""
        return request.url.path.startswith(self.api_prefix)

    async def not_found(self, request: Request, body: Any) -> Response:
        return self.error_response(
            404, f"Not found: {request.method} {request.url.path}", type_="not_found_error"
        )

    @property
    def base_url(self) -> str:
        """What the vendor's SDK takes as its URL."""
        return self.url

    def ready_line(self) -> str:
        """What the command line prints once the server accepts connections."""
        return f"{self.ready_prefix} {self.base_url}"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Command-line options beyond host, port, latency and API key."""

    @classmethod
    def options_from(cls, args: argparse.Namespace) -> dict[str, Any]:
        """Constructor keyword arguments from the parsed command line."""
        return {"api_key": args.api_key, "latency": args.latency}

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    def start(cls, *, host: str = "127.0.0.1", port: int = 0, **options: Any) -> Self:
        """Serve on ``host:port`` (0: any free port) from a background thread."""
        fake = cls(**options)
        fake._serve(host, port)
        return fake

    def _serve(self, host: str, port: int) -> None:
        self._host = host
        # Binding here rather than in uvicorn tells us the ephemeral port before it starts.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Inherited by every accepted connection. Without it each answer waits ~40 ms for
        # the peer's delayed ACK (Nagle): uvicorn sets no TCP_NODELAY on sockets it is given.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            loop="asyncio",
            timeout_graceful_shutdown=1,
        )
        server = PromptServer(config)
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
        self.release()  # held requests would stall the graceful shutdown
        if self._server is not None:
            self._server.exit()
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
        retry_after: float | str | None = None,
        message: str | None = None,
        code: str | None = None,
        error_type: str | None = None,
    ) -> None:
        """Answer the next ``times`` API requests with this vendor-shaped error.

        ``retry_after`` is sent as the ``retry-after`` header: a number as seconds, a string
        (e.g. an HTTP date) verbatim."""
        failure = self._failure(status)
        failure = InjectedFailure(
            status=status,
            message=message or failure.message,
            type=error_type or failure.type,
            code=code if code is not None else failure.code,
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

    def hold(self, predicate: Callable[[Any], bool] = lambda body: True) -> None:
        """Hold every API request whose body matches (after authentication) until
        :meth:`release`: the test knows a call is in progress, and decides when and how it
        ends, instead of guessing with latencies."""
        with self._lock:
            self._hold = predicate

    @property
    def held_count(self) -> int:
        """Requests waiting in :meth:`hold` right now."""
        with self._lock:
            return len(self._held)

    def release(self, *, failure: int | None = None, hold_more: bool = False) -> int:
        """Let every held request go on (as the vendor's error ``failure`` when given);
        unless ``hold_more``, later requests are no longer held. Returns how many."""
        with self._lock:
            held, self._held = self._held, []
            if not hold_more:
                self._hold = None
        for entry in held:
            entry.open(failure)
        return len(held)

    def reset(self) -> None:
        """Forget requests, pending failures and holds; restore the controls given at start."""
        self.api_key, self.latency = self._initial_api_key, self._initial_latency
        self.latency_of = None
        with self._lock:
            self._failures.clear()
            self._raw_replies.clear()
        self.release()
        with self._lock:
            self._log.clear()
            self._max_in_flight = self._in_flight

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._log)

    def requests_to(self, path: str, *, method: str | None = None) -> list[RecordedRequest]:
        return [
            r for r in self.requests if r.path == path and (method is None or r.method == method)
        ]

    @property
    def max_in_flight(self) -> int:
        """The most requests in progress at once since the last reset."""
        return self._max_in_flight

    @property
    def in_flight(self) -> int:
        """Requests in progress now; a request is in ``requests`` only once it has ended."""
        with self._lock:
            return self._in_flight

    def next_id(self) -> int:
        return next(self._ids)

    def record(
        self, method: str, path: str, status: int, headers: Mapping[str, str], body: Any = None
    ) -> None:
        """Log a call that did not come through HTTP routing (a gRPC method, say)."""
        now = time.monotonic()
        with self._lock:
            self._log.append(
                RecordedRequest(method, path, body, _masked_headers(headers), "", status, now, now)
            )

    # -- the app -----------------------------------------------------------------------

    def _routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = [
            Route(path, self._recorded(handler), methods=methods)
            for path, handler, methods in self.api_routes()
        ]
        routes += [
            Route("/_fake/failures", self._control_failures, methods=["POST"]),
            Route("/_fake/latency", self._control_latency, methods=["POST"]),
            Route("/_fake/requests", self._control_requests, methods=["GET"]),
            Route("/_fake/reset", self._control_reset, methods=["POST"]),
        ]
        if isinstance(self, FakeProviderServer):
            routes.append(Route("/_fake/answers", self._control_answers, methods=["POST"]))
        if self.answers_unknown_paths:
            routes.append(
                Route(
                    "/{path:path}",
                    self._recorded(self.not_found),
                    methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                )
            )
        return routes

    def _recorded(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            started = time.monotonic()
            with self._lock:
                self._in_flight += 1
                self._max_in_flight = max(self._max_in_flight, self._in_flight)
            body: Any = None
            try:
                raw = await request.body()
                if raw:
                    try:
                        body = await request.json()
                    except ValueError:
                        body = raw.decode(errors="replace")
                response = await self._gate(request, body) or await handler(request, body)
            except BaseException:
                with self._lock:
                    self._in_flight -= 1
                raise
            record = RecordedRequest(
                method=request.method,
                path=request.url.path,
                body=body,
                headers=_masked_headers(request.headers),
                client=f"{request.client.host}:{request.client.port}" if request.client else "",
                status=response.status_code,
                started_at=started,
                finished_at=time.monotonic(),
            )
            # Logged and no longer counted in one step: once ``in_flight`` is 0, every
            # request that has ended is in the log.
            with self._lock:
                self._log.append(record)
                self._in_flight -= 1
            return response

        return endpoint

    def _failure(self, status: int) -> InjectedFailure:
        vendor = self.error_defaults.get(status)
        if vendor is None:
            vendor = ErrorDefault(None, self.failure_message.format(status=status))
        return InjectedFailure(status, vendor.message, vendor.type, vendor.code, None)

    def _failure_response(self, failure: InjectedFailure) -> Response:
        headers = None
        if isinstance(failure.retry_after, str):
            headers = {"retry-after": failure.retry_after}
        elif failure.retry_after is not None:
            headers = {"retry-after": f"{failure.retry_after:g}"}
        return self.error_response(
            failure.status, failure.message, type_=failure.type, code=failure.code, headers=headers
        )

    async def _gate(self, request: Request, body: Any) -> Response | None:
        """Injected failures first (so tests control the outcome), then auth, then latency
        and holds."""
        if not self.gated(request):
            return None
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            return self._failure_response(failure)
        refused = self.authorised(request)
        if refused is not None:
            return refused
        # Taken before the latency, so a request still waiting out an earlier test's
        # latency cannot answer with the reply queued for this one.
        with self._lock:
            raw = self._raw_replies.popleft() if self._raw_replies else None
        chosen = self.latency_of(body) if self.latency_of is not None else None
        latency = self.latency if chosen is None else chosen
        if latency > 0:
            await asyncio.sleep(latency)
        with self._lock:
            entry = _Held(asyncio.get_running_loop()) if self._hold and self._hold(body) else None
            if entry is not None:
                self._held.append(entry)
        if entry is not None:
            failure_status = await entry.wait()
            if failure_status is not None:
                return self._failure_response(self._failure(failure_status))
        if raw is not None:
            return Response(raw.body, status_code=raw.status, media_type=raw.content_type)
        return None

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
        return JSONResponse([asdict(r) | {"has_auth": r.has_auth} for r in self.requests])

    async def _control_answers(self, request: Request) -> Response:
        spec = await request.json()
        if not isinstance(spec, dict) or "value" not in spec:
            return JSONResponse({"error": "expected {value, times?}"}, status_code=400)
        assert isinstance(self, FakeProviderServer)
        self.answer_next(spec["value"], times=int(spec.get("times", 1)))
        return JSONResponse({"ok": True})

    async def _control_reset(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"ok": True})


class FakeProviderServer(FakeServer):
    """An LLM / embedding provider: chat replies from ``responder``, fake embeddings."""

    answers_unknown_paths: ClassVar[bool] = True
    failure_message: ClassVar[str] = "HTTP {status}"

    def __init__(
        self,
        *,
        api_key: str | None = None,
        latency: float = 0.0,
        embedding_dim: int = DEFAULT_DIM,
    ) -> None:
        self._initial_embedding_dim = embedding_dim
        self.embedding_dim = embedding_dim
        self.responder: Responder | None = None
        """Chooses the reply text from the JSON request body; default: ``echo: <prompt>``."""
        self._answers: deque[Any] = deque()
        super().__init__(api_key=api_key, latency=latency)

    def reset(self) -> None:
        super().reset()
        self.embedding_dim = self._initial_embedding_dim
        self.responder = None
        with self._lock:
            self._answers.clear()

    def answer_next(self, value: Any, *, times: int = 1) -> None:
        """Answer the next ``times`` requests that ask for structured output with ``value``
        instead of a value generated from their schema, in the vendor's own place for it
        (a string is sent as the reply's text as it is, e.g. something that is not JSON):
        how a test makes a model miss its schema."""
        with self._lock:
            self._answers.extend([value] * times)

    def structured_answer(self, schema: Any, messages: list[Any]) -> Any:
        """What the model answers to a request carrying ``schema``: the value queued by
        ``answer_next``, else one generated from the schema (its strings quoting the
        prompt, the first user message)."""
        with self._lock:
            if self._answers:
                return self._answers.popleft()
        users = [
            text_of(m.get("content"))
            for m in messages
            if isinstance(m, dict) and m.get("role") == "user"
        ]
        return example_value(schema, seed=users[0][:_ECHO_LIMIT] if users else "")

    def reply_text(self, body: dict[str, Any], messages: list[Any]) -> str:
        """What the model says: the responder's choice, else ``echo: <last user text>``."""
        if self.responder is not None:
            return self.responder(body)
        users = [
            text_of(m.get("content"))
            for m in messages
            if isinstance(m, dict) and m.get("role") == "user"
        ]
        return f"echo: {users[-1] if users else ''}"[:_ECHO_LIMIT]

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--embedding-dim", type=int, default=DEFAULT_DIM)

    @classmethod
    def options_from(cls, args: argparse.Namespace) -> dict[str, Any]:
        return super().options_from(args) | {"embedding_dim": args.embedding_dim}


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type", "text") == "text"
            and isinstance(part.get("text"), str)
        )
    return ""


def masked(key: str) -> str:
    return f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "***"


def _masked_headers(headers: Mapping[str, str]) -> dict[str, str]:
    lowered = ((str(k).lower(), str(v)) for k, v in headers.items())
    return {
        name: masked(value) if name in _CREDENTIAL_HEADERS else value for name, value in lowered
    }


def serve_from_command_line(cls: type[FakeServer], argv: list[str] | None = None) -> None:
    """``python -m tests.fakes.<name> --port N``: serve until SIGTERM/SIGINT.

    Prints the fake's ready line (``<READY_PREFIX> <base_url>``) once the server accepts
    connections.
    """
    parser = argparse.ArgumentParser(description=f"A fake {cls.name} API for tests and demos.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--api-key", default=None, help="require this key")
    cls.add_arguments(parser)
    args = parser.parse_args(argv)

    # Blocked before the server thread starts (it inherits the mask) and taken with
    # sigwait: a handler setting an Event could interrupt the main thread inside that
    # Event's own wait, holding its lock, and hang the process on SIGTERM.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    fake = cls.start(host=args.host, port=args.port, **cls.options_from(args))
    try:
        print(fake.ready_line(), flush=True)
        signal.sigwait(stop_signals)
    finally:
        fake.stop()
