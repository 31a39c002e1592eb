"""A fake OpenAI HTTP API that the official SDK accepts, for tests that need real HTTP.

In-process::

    with FakeOpenAI.start(api_key="sk-test") as fake:
        fake.latency = 0.5
        fake.fail_next(status=429, retry_after=1)
        fake.hold()  # later requests wait for fake.release() (fake.held_count tells)
        ...  # point a client at fake.base_url
        assert fake.requests_to("/v1/chat/completions")

In another process::

    python -m tests.fakes.openai_server --port 0 --latency 0.0 [--api-key K]

prints ``FAKE_OPENAI_READY http://127.0.0.1:PORT/v1`` once it accepts connections and
serves until SIGTERM/SIGINT. Its controls are then reachable over HTTP:
``POST /_fake/failures`` (body: the keyword arguments of ``fail_next``),
``POST /_fake/latency`` (``{"seconds": 0.5}``), ``GET /_fake/requests``, ``POST /_fake/reset``.

Latency is an ``asyncio.sleep`` on the server's one event loop, so hundreds of concurrent
requests wait together. Controls are plain attributes, settable while the server runs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import signal
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.embeddings import DEFAULT_DIM, count_tokens, fake_embedding

__all__ = [
    "DEFAULT_MODELS",
    "FakeOpenAI",
    "InjectedFailure",
    "RecordedRequest",
    "count_tokens",
    "fake_embedding",
]

DEFAULT_MODELS = frozenset({"gpt-4", "gpt-4o", "gpt-4o-mini", "text-embedding-3-small"})
READY_PREFIX = "FAKE_OPENAI_READY"
_ECHO_LIMIT = 200

Responder = Callable[[dict[str, Any]], str]

# OpenAI's own (type, code, message) for each status, so SDK parsing sees familiar bodies.
_ERROR_DEFAULTS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    422: ("invalid_request_error", None, "Unprocessable request."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


@dataclass(frozen=True, slots=True)
class InjectedFailure:
    status: int
    message: str
    type: str
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
    has_auth: bool
    client: str
    status: int
    started_at: float
    finished_at: float


def _error(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part.get("text", "") for part in content if isinstance(part, dict) and "text" in part
        )
    return ""


def _default_reply(body: dict[str, Any]) -> str:
    user_texts = [
        _text_of(m.get("content"))
        for m in body["messages"]
        if isinstance(m, dict) and m.get("role") == "user"
    ]
    return f"echo: {user_texts[-1] if user_texts else ''}"[:_ECHO_LIMIT]


def _masked(key: str) -> str:
    return f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "***"


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


class FakeOpenAI:
    """The fake server plus its run-time controls and request log."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        latency: float = 0.0,
        models: frozenset[str] | None = None,
        embedding_dim: int = DEFAULT_DIM,
    ) -> None:
        self._initial = (api_key, latency, models, embedding_dim)
        self.api_key = api_key
        """When set, requests without ``Authorization: Bearer <api_key>`` get 401."""
        self.latency = latency
        """Seconds every /v1 request waits before answering."""
        self.models = models
        """When set, other model names get OpenAI's 404 ``model_not_found``; None accepts any."""
        self.embedding_dim = embedding_dim
        self.responder: Responder | None = None
        """Chooses the reply text from the JSON request body; default: ``echo: <prompt>``."""
        self.latency_of: Callable[[Any], float | None] | None = None
        """Chooses one request's latency from its JSON body (None: use ``latency``)."""
        self._lock = threading.Lock()
        self._failures: deque[InjectedFailure] = deque()
        self._raw_replies: deque[RawReply] = deque()
        self._hold: Callable[[Any], bool] | None = None
        self._held: list[_Held] = []
        self._log: list[RecordedRequest] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._ids = itertools.count(1)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._host = "127.0.0.1"
        self.app = self._build_app()

    # -- lifecycle ---------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        latency: float = 0.0,
        models: frozenset[str] | None = None,
        embedding_dim: int = DEFAULT_DIM,
    ) -> Self:
        """Serve on ``host:port`` (0: any free port) from a background thread."""
        fake = cls(api_key=api_key, latency=latency, models=models, embedding_dim=embedding_dim)
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
            target=server.run, kwargs={"sockets": [sock]}, name="fake-openai", daemon=True
        )
        self._server, self._thread, self._socket = server, thread, sock
        thread.start()
        deadline = time.monotonic() + 10.0
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("fake OpenAI server failed to start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.release()  # held requests would stall the graceful shutdown
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
            raise RuntimeError("the fake OpenAI server is not running")
        port: int = self._socket.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What an OpenAI client takes as ``base_url``."""
        return f"{self.url}/v1"

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
        """Answer the next ``times`` /v1 requests with this OpenAI-shaped error.

        ``retry_after`` is sent as the ``retry-after`` header: a number as seconds, a string
        (e.g. an HTTP date) verbatim."""
        default_type, default_code, default_message = _ERROR_DEFAULTS.get(
            status, ("invalid_request_error", None, f"HTTP {status}")
        )
        failure = InjectedFailure(
            status=status,
            message=message or default_message,
            type=error_type or default_type,
            code=code if code is not None else default_code,
            retry_after=retry_after,
        )
        with self._lock:
            self._failures.extend([failure] * times)

    def hold(self, predicate: Callable[[Any], bool] = lambda body: True) -> None:
        """Hold every /v1 request whose JSON body matches (after authentication) until
        :meth:`release`: the test knows a provider call is in progress, and decides when
        and how it ends, instead of guessing with latencies."""
        with self._lock:
            self._hold = predicate

    @property
    def held_count(self) -> int:
        """Requests waiting in :meth:`hold` right now."""
        with self._lock:
            return len(self._held)

    def release(self, *, failure: int | None = None, hold_more: bool = False) -> int:
        """Let every held request go on (as an OpenAI error ``failure`` when given); unless
        ``hold_more``, later requests are no longer held. Returns how many were released."""
        with self._lock:
            held, self._held = self._held, []
            if not hold_more:
                self._hold = None
        for entry in held:
            entry.open(failure)
        return len(held)

    def reply_next(
        self,
        body: str | bytes,
        *,
        status: int = 200,
        content_type: str = "application/json",
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` /v1 requests with exactly this body (a malformed or
        truncated reply), after authentication like a real answer."""
        raw = body.encode() if isinstance(body, str) else body
        with self._lock:
            self._raw_replies.extend([RawReply(status, raw, content_type)] * times)

    def reset(self) -> None:
        """Forget requests and pending failures; restore the controls given at start."""
        self.api_key, self.latency, self.models, self.embedding_dim = self._initial
        self.responder = None
        self.latency_of = None
        with self._lock:
            self._failures.clear()
            self._raw_replies.clear()
            self._hold = None
            held, self._held = self._held, []
        for entry in held:
            entry.open(None)
        with self._lock:
            self._log.clear()
            self._max_in_flight = self._in_flight

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._log)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == path]

    @property
    def max_in_flight(self) -> int:
        """The most /v1 requests in progress at once since the last reset."""
        return self._max_in_flight

    # -- the app -----------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        api = [
            ("/v1/chat/completions", self._chat, ["POST"]),
            ("/v1/embeddings", self._embeddings, ["POST"]),
            ("/v1/models", self._models, ["GET"]),
        ]
        routes = [Route(path, self._recorded(handler), methods=m) for path, handler, m in api]
        routes += [
            Route("/_fake/failures", self._control_failures, methods=["POST"]),
            Route("/_fake/latency", self._control_latency, methods=["POST"]),
            Route("/_fake/requests", self._control_requests, methods=["GET"]),
            Route("/_fake/reset", self._control_reset, methods=["POST"]),
            Route(
                "/{path:path}",
                self._recorded(self._invalid_url),
                methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            ),
        ]
        return Starlette(routes=routes)

    def _recorded(
        self, handler: Callable[[Request, Any], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
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
            finally:
                with self._lock:
                    self._in_flight -= 1
            client = f"{request.client.host}:{request.client.port}" if request.client else ""
            record = RecordedRequest(
                method=request.method,
                path=request.url.path,
                body=body,
                has_auth="authorization" in request.headers,
                client=client,
                status=response.status_code,
                started_at=started,
                finished_at=time.monotonic(),
            )
            with self._lock:
                self._log.append(record)
            return response

        return endpoint

    async def _gate(self, request: Request, body: Any) -> Response | None:
        """Injected failures first (so tests control the outcome), then auth, then latency."""
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            headers = None
            if isinstance(failure.retry_after, str):
                headers = {"retry-after": failure.retry_after}
            elif failure.retry_after:
                headers = {"retry-after": f"{failure.retry_after:g}"}
            return _error(
                failure.status,
                failure.message,
                type_=failure.type,
                code=failure.code,
                headers=headers,
            )
        if self.api_key is not None:
            supplied = request.headers.get("authorization", "")
            if not supplied:
                return _error(401, "You didn't provide an API key.", code="invalid_api_key")
            if supplied != f"Bearer {self.api_key}":
                key = supplied.removeprefix("Bearer ")
                return _error(
                    401, f"Incorrect API key provided: {_masked(key)}.", code="invalid_api_key"
                )
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
                _, code, message = _ERROR_DEFAULTS.get(failure_status, ("", None, "Error."))
                return _error(failure_status, message, code=code)
        with self._lock:
            raw = self._raw_replies.popleft() if self._raw_replies else None
        if raw is not None:
            return Response(raw.body, status_code=raw.status, media_type=raw.content_type)
        return None

    def _unknown_model(self, body: dict[str, Any]) -> Response | None:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return _error(400, "you must provide a model parameter", param="model")
        if self.models is not None and model not in self.models:
            return _error(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                code="model_not_found",
            )
        return None

    async def _chat(self, request: Request, body: Any) -> Response:
        if not isinstance(body, dict):
            return _error(400, "We could not parse the JSON body of your request.")
        problem = self._unknown_model(body)
        if problem is not None:
            return problem
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "'messages' must be a non-empty array", param="messages")
        if body.get("stream"):
            return _error(400, "streaming is not supported by the fake", param="stream")
        text = (self.responder or _default_reply)(body)
        finish_reason = "stop"
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and count_tokens(text) > limit:
            text, finish_reason = " ".join(text.split()[:limit]), "length"
        prompt_tokens = sum(
            count_tokens(_text_of(m.get("content"))) for m in messages if isinstance(m, dict)
        )
        completion_tokens = count_tokens(text)
        return JSONResponse(
            {
                "id": f"chatcmpl-fake{next(self._ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )

    async def _embeddings(self, request: Request, body: Any) -> Response:
        if not isinstance(body, dict):
            return _error(400, "We could not parse the JSON body of your request.")
        problem = self._unknown_model(body)
        if problem is not None:
            return problem
        raw_input = body.get("input")
        texts = [raw_input] if isinstance(raw_input, str) else raw_input
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return _error(
                400, "'input' must be a string or a non-empty array of strings", param="input"
            )
        dim = body.get("dimensions") or self.embedding_dim
        if not isinstance(dim, int) or dim <= 0:
            return _error(400, "'dimensions' must be a positive integer", param="dimensions")
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = fake_embedding(text, dim)
            encoded: Any = (
                base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode() if as_base64 else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(count_tokens(t) for t in texts)
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _models(self, request: Request, body: Any) -> Response:
        names = sorted(self.models if self.models is not None else DEFAULT_MODELS)
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": 0, "owned_by": "fake-openai"}
                    for name in names
                ],
            }
        )

    async def _invalid_url(self, request: Request, body: Any) -> Response:
        # What OpenAI answers for a wrong path, e.g. a base_url missing its "/v1".
        return _error(404, f"Invalid URL ({request.method} {request.url.path})")

    async def _control_failures(self, request: Request) -> Response:
        try:
            self.fail_next(**await request.json())
        except (TypeError, ValueError) as exc:
            return _error(400, f"bad failure spec: {exc}")
        return JSONResponse({"ok": True})

    async def _control_latency(self, request: Request) -> Response:
        self.latency = float((await request.json())["seconds"])
        return JSONResponse({"ok": True})

    async def _control_requests(self, request: Request) -> Response:
        return JSONResponse([asdict(r) for r in self.requests])

    async def _control_reset(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"ok": True})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--api-key", default=None, help="require this bearer key")
    parser.add_argument("--embedding-dim", type=int, default=DEFAULT_DIM)
    args = parser.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    fake = FakeOpenAI.start(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        latency=args.latency,
        embedding_dim=args.embedding_dim,
    )
    try:
        print(f"{READY_PREFIX} http://{args.host}:{fake.port}/v1", flush=True)
        stop.wait()
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
