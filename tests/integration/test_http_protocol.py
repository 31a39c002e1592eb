"""``llmo serve``'s HTTP protocol (``api/http_protocol.py``) writes what one turn of the
event loop produced as one send: answers stay whole and in order on a kept-alive
connection, a ``Connection: close`` answer is all there before the close, and a streamed
answer's head is not held back until its body."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send

from tests.integration.serve_support import threaded_server

BODY = b'{"ok":"\xc3\xa9"}'


class _App:
    """``/small``: a JSON answer; ``/held``: the same, once the test says so; ``/stream``:
    the head, then (once the test says so) the body; ``/boom``: an error."""

    def __init__(self) -> None:
        self.go_on = threading.Event()
        self.held = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-type", b"application/json")]
        if scope["path"] == "/boom":
            raise RuntimeError("boom")
        if scope["path"] == "/held":
            # Answers only once the test says so (the request behind it is already sent).
            self.held.set()
            while not self.go_on.is_set():
                await asyncio.sleep(0.01)
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            while not self.go_on.is_set():
                await asyncio.sleep(0.01)
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            await send({"type": "http.response.body", "body": b"end"})
            return
        headers.append((b"content-length", b"%d" % len(BODY)))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": BODY})


KEEP_ALIVE_SECONDS = 5


@pytest.fixture
def served(request: pytest.FixtureRequest) -> Iterator[tuple[int, _App]]:
    app = _App()
    keep_alive = getattr(request, "param", KEEP_ALIVE_SECONDS)
    with threaded_server(app, timeout_keep_alive=keep_alive) as port:
        try:
            yield port, app
        finally:
            app.go_on.set()


def _read_until(sock: socket.socket, received: bytearray, ending: bytes, count: int = 1) -> None:
    while received.count(ending) < count:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {bytes(received)!r}"
        received += chunk


def test_pipelined_answers_are_whole_and_in_order_and_close_comes_after_the_last(
    served: tuple[int, Any],
) -> None:
    port, _ = served
    request = b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n"
    last = b"GET /small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request * 3 + last)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk

    answers = bytes(received).split(b"HTTP/1.1 ")[1:]
    assert len(answers) == 4
    for answer in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"200 OK")
        assert b"content-length: %d" % len(BODY) in head
        assert body == BODY
    assert b"connection: close" in answers[-1].lower()


def test_a_streamed_answers_head_leaves_before_its_body_is_written(
    served: tuple[int, _App],
) -> None:
    port, app = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        received = bytearray()
        # The app writes no body until the head has arrived here.
        _read_until(sock, received, b"\r\n\r\n")
        assert received.startswith(b"HTTP/1.1 200 OK")
        assert b"transfer-encoding: chunked" in received.lower()
        app.go_on.set()
        _read_until(sock, received, b"0\r\n\r\n")
    body = bytes(received).partition(b"\r\n\r\n")[2]
    assert body == b"4\r\npart\r\n3\r\nend\r\n0\r\n\r\n"


def _exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        received = bytearray()
        _read_until(sock, received, BODY)
    return bytes(received)


def _without_date(answer: bytes) -> bytes:
    return b"\r\n".join(
        line for line in answer.split(b"\r\n") if not line.lower().startswith(b"date:")
    )


def test_a_plain_get_is_answered_byte_for_byte_as_h11_answers_it(
    served: tuple[int, _App],
) -> None:
    port, _ = served
    # A plain GET takes the lean path; the same GET with a Connection header goes to h11.
    lean = _exchange(port, b"GET /small?x=1 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n")
    h11 = _exchange(
        port,
        b"GET /small?x=1 HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n",
    )

    assert lean.startswith(b"HTTP/1.1 200 OK\r\ndate: ")
    assert _without_date(lean) == _without_date(h11)


def test_a_request_sent_while_a_plain_get_is_answered_is_answered_after_it(
    served: tuple[int, _App],
) -> None:
    port, app = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
        assert app.held.wait(timeout=20)  # the first request is in the app, not answered
        sock.sendall(b"GET /small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        app.go_on.set()
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk

    answers = bytes(received).split(b"HTTP/1.1 ")[1:]
    assert len(answers) == 2
    assert all(answer.endswith(BODY) for answer in answers)
    assert b"connection: close" not in answers[0].lower()
    assert b"connection: close" in answers[1].lower()


def test_an_error_in_the_app_is_still_uvicorns_500_and_the_connection_closes(
    served: tuple[int, _App],
) -> None:
    port, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n")
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk

    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 Internal Server Error")
    assert b"connection: close" in head.lower()
    assert b"Internal Server Error" in body


@pytest.mark.parametrize("served", [2], indirect=True)
def test_a_kept_alive_connection_closes_once_idle_for_the_keep_alive_timeout(
    served: tuple[int, _App],
) -> None:
    port, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        received = bytearray()
        sock.sendall(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
        _read_until(sock, received, BODY)
        # A second request half-way through the first idle spell: the timeout counts
        # from its answer, not from the first.
        time.sleep(0.5)
        sock.sendall(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
        _read_until(sock, received, BODY, count=2)
        answered = time.monotonic()
        assert sock.recv(65536) == b""  # closed by the server
        idle = time.monotonic() - answered

    assert idle >= 1.9
