"""What the vector-database fakes share: a threaded uvicorn server, injectable failures and
latency, a request log, and the ``python -m tests.fakes.<name> --port N`` entry point.

Each fake subclasses ``FakeHttpServer`` with its routes, its own error body shape and its
own way of checking an API key, so the official SDK sees the vendor's real wire protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

__all__ = ["FakeHttpServer", "Failure", "Recorded", "cosine", "run_main"]

Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Failure:
    status: int
    message: str
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class Recorded:
    method: str
    path: str
    status: int
    headers: dict[str, str]
    body: bytes


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


class FakeHttpServer:
    """Subclasses implement ``routes`` and ``error`` (and may override ``authorized``)."""

    name = "fake"

    def __init__(self, *, api_key: str | None = None, latency: float = 0.0) -> None:
        self.api_key = api_key
        """When set, requests must carry it the vendor's way, or get the vendor's 401."""
        self.latency = latency
        self._lock = threading.Lock()
        self._failures: deque[Failure] = deque()
        self._log: list[Recorded] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._host = "127.0.0.1"
        self.app = Starlette(routes=self._wrapped_routes())

    # -- to implement --------------------------------------------------------------------

    def routes(self) -> list[tuple[str, Handler, list[str]]]:
        raise NotImplementedError

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def authorized(self, request: Request) -> bool:
        return True

    def gated(self, request: Request) -> bool:
        """Whether failures, auth and latency apply to this request (all by default)."""
        return True

    # -- lifecycle -----------------------------------------------------------------------

    @classmethod
    def start(cls, *, host: str = "127.0.0.1", port: int = 0, **kwargs: Any) -> Self:
        fake = cls(**kwargs)
        fake._serve(host, port)
        return fake

    def _serve(self, host: str, port: int) -> None:
        self._host = host
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

    # -- controls ------------------------------------------------------------------------

    def fail_next(
        self,
        status: int = 500,
        *,
        times: int = 1,
        retry_after: float | None = None,
        message: str | None = None,
    ) -> None:
        failure = Failure(status, message or f"injected failure {status}", retry_after)
        with self._lock:
            self._failures.extend([failure] * times)

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._log)

    def requests_to(self, method: str, path_part: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and path_part in r.path]

    # -- plumbing ------------------------------------------------------------------------

    def _wrapped_routes(self) -> list[BaseRoute]:
        wrapped: list[BaseRoute] = [
            Route(path, self._recorded(handler), methods=methods)
            for path, handler, methods in self.routes()
        ]
        wrapped.append(Route("/_fake/failures", self._control_failures, methods=["POST"]))
        wrapped.append(Route("/_fake/latency", self._control_latency, methods=["POST"]))
        return wrapped

    def _recorded(self, handler: Handler) -> Handler:
        async def endpoint(request: Request) -> Response:
            body = await request.body()
            response = await self._gate(request) or await handler(request)
            record = Recorded(
                request.method, request.url.path, response.status_code, dict(request.headers), body
            )
            with self._lock:
                self._log.append(record)
            return response

        return endpoint

    async def _gate(self, request: Request) -> Response | None:
        if not self.gated(request):
            return None
        with self._lock:
            failure = self._failures.popleft() if self._failures else None
        if failure is not None:
            headers = {"retry-after": f"{failure.retry_after:g}"} if failure.retry_after else None
            return self.error(failure.status, failure.message, headers)
        if self.api_key is not None and not self.authorized(request):
            return self.error(401, "Invalid API key")
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        return None

    async def _control_failures(self, request: Request) -> Response:
        self.fail_next(**await request.json())
        return JSONResponse({"ok": True})

    async def _control_latency(self, request: Request) -> Response:
        self.latency = float((await request.json())["seconds"])
        return JSONResponse({"ok": True})


def run_main(cls: type[FakeHttpServer], ready: str, argv: list[str] | None = None) -> None:
    """``--port N [--api-key K] [--latency S]``; prints ``<ready> <url>`` once serving."""
    parser = argparse.ArgumentParser(description=f"A fake {cls.name} server for tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--api-key", default=None, help="require this API key")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    fake = cls.start(host=args.host, port=args.port, api_key=args.api_key, latency=args.latency)
    try:
        print(f"{ready} {fake.url}", flush=True)
        stop.wait()
    finally:
        fake.stop()
