"""``llmo serve``'s HTTP protocol (``api/http_protocol.py``) writes what one turn of the
event loop produced as one send: answers stay whole and in order on a kept-alive
connection, a ``Connection: close`` answer is all there before the close, and a streamed
answer's head is not held back until its body."""

from __future__ import annotations

import asyncio
import re
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


# --- POSTs: the lean path takes a plain one whose body came with its head ---------------


class _Echo:
    """Answers every request with what the app was given: the scope's request fields, the
    body ``receive`` gave and its last message, so two servers' answers differ wherever
    what an app sees differs (``/parts``: the messages themselves). ``/stream`` streams,
    ``/boom`` fails, neither reading the body."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/boom":
            raise RuntimeError("boom")
        if scope["path"] == "/stream":
            headers = [(b"content-type", b"text/plain")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"part", "more_body": True})
            await send({"type": "http.response.body", "body": b"end"})
            return
        messages = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        seen = {
            key: scope[key]
            for key in ("method", "http_version", "path", "raw_path", "query_string", "headers")
        }
        # The body whole, and how it ended (how it was split, and so what the last message
        # held, depends on how it arrived).
        last = {key: value for key, value in messages[-1].items() if key != "body"}
        body = repr((seen, b"".join(m.get("body", b"") for m in messages), last)).encode()
        if scope["path"] == "/parts":
            body = repr(messages).encode()
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def echoes() -> Iterator[tuple[int, int]]:
    """The echo app behind the protocol ``llmo serve`` uses, twice: with the lean path, and
    with every request through h11 (the lean path steps aside under ``limit_concurrency``)."""
    with (
        threaded_server(_Echo()) as lean,
        threaded_server(_Echo(), limit_concurrency=1000) as h11_only,
    ):
        yield lean, h11_only


def _one_answer(sock: socket.socket, received: bytearray) -> bytes:
    """The next whole answer on ``sock`` (framed by its length, its chunks, or the close)."""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            answer = bytes(received)
            received.clear()
            return answer
        received += chunk
    head_end = received.index(b"\r\n\r\n") + 4
    head = bytes(received[:head_end]).lower()
    if b"content-length: " in head:
        length = int(head.split(b"content-length: ")[1].split(b"\r\n")[0])
        while len(received) < head_end + length:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {bytes(received)!r}"
            received += chunk
        end = head_end + length
    elif b"transfer-encoding: chunked" in head:
        while b"0\r\n\r\n" not in received[head_end:]:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {bytes(received)!r}"
            received += chunk
        end = received.index(b"0\r\n\r\n", head_end) + 5
    else:
        while chunk := sock.recv(65536):
            received += chunk
        end = len(received)
    answer = bytes(received[:end])
    del received[:end]
    return answer


def _conversation(port: int, sends: list[bytes]) -> list[bytes]:
    """Each of ``sends`` sent in turn, then a plain GET that closes: every answer, until
    the server closes (answers with their dates and request ids blanked)."""
    answers = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for data in sends:
            sock.sendall(data)
        received = bytearray()
        closing = b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        sent_closing = False
        while True:
            answer = _one_answer(sock, received)
            if not answer:
                break
            answers.append(answer)
            if b"connection: close" in answer.lower().partition(b"\r\n\r\n")[0]:
                break
            if not sent_closing and not received:
                sock.sendall(closing)
                sent_closing = True
    return [re.sub(rb"req-[0-9a-f-]{36}", b"req-?", _without_date(a)) for a in answers]


def _post(body: bytes, *headers: bytes, target: bytes = b"/echo?x=1") -> bytes:
    lines = [b"POST " + target + b" HTTP/1.1", b"Host: x", b"Content-Type: application/json"]
    return b"\r\n".join([*lines, *headers, b"", b""]) + body


JSON = b'{"inputs": {"input": "\xc3\xa9"}, "async": true}'
LENGTH = b"Content-Length: %d" % len(JSON)

POSTS = {
    "plain": [_post(JSON, LENGTH)],
    "empty body": [_post(b"", b"Content-Length: 0")],
    "length with leading zeros": [_post(JSON, b"Content-Length: 00%d" % len(JSON))],
    "blanks around the length": [_post(JSON, b"Content-Length:  %d \t" % len(JSON))],
    "body sent after the head": [_post(b"", LENGTH), JSON],
    "body sent in two parts": [_post(JSON[:5], LENGTH), JSON[5:]],
    "a request behind it": [_post(JSON, LENGTH) + b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"],
    "more body than its length": [_post(JSON + b"xx", LENGTH)],
    "a length listed twice": [_post(JSON, b"Content-Length: %d, %d" % (len(JSON), len(JSON)))],
    "two equal lengths": [_post(JSON, LENGTH, LENGTH)],
    "two different lengths": [_post(JSON, LENGTH, b"Content-Length: 3")],
    "a length not a number": [_post(JSON, b"Content-Length: 4x")],
    "a negative length": [_post(JSON, b"Content-Length: -1")],
    "a length of 21 digits": [_post(JSON, b"Content-Length: 1" + b"0" * 20)],
    "no length": [
        _post(
            b"",
        )
    ],
    "chunked": [_post(b"%x\r\n%s\r\n0\r\n\r\n" % (len(JSON), JSON), b"Transfer-Encoding: chunked")],
    "chunked and a length": [
        _post(b"%x\r\n%s\r\n0\r\n\r\n" % (len(JSON), JSON), LENGTH, b"Transfer-Encoding: chunked")
    ],
    "an unknown transfer coding": [_post(JSON, b"Transfer-Encoding: gzip")],
    "expects 100-continue": [_post(JSON, LENGTH, b"Expect: 100-continue")],
    "asks to close": [_post(JSON, LENGTH, b"Connection: close")],
    "no host": [_post(JSON, LENGTH).replace(b"Host: x\r\n", b"")],
    "two hosts": [_post(JSON, LENGTH, b"Host: y")],
    "a folded header": [_post(JSON, LENGTH, b"X-A: 1", b" 2")],
    "a bad header name": [_post(JSON, LENGTH, b"X A: 1")],
    "a NUL in a header": [_post(JSON, LENGTH, b"X-A: \x00")],
    "HTTP/1.0": [_post(JSON, LENGTH).replace(b"HTTP/1.1", b"HTTP/1.0", 1)],
    "PUT": [_post(JSON, LENGTH).replace(b"POST", b"PUT", 1)],
    "a percent-encoded path": [_post(JSON, LENGTH, target=b"/ec%68o/%C3%A9?q=%20")],
    "a raw 0xff in the target": [_post(JSON, LENGTH, target=b"/echo\xff")],
    "a streamed answer": [_post(JSON, LENGTH, target=b"/stream")],
    "an error in the app": [_post(JSON, LENGTH, target=b"/boom")],
}


@pytest.mark.parametrize("sends", POSTS.values(), ids=POSTS.keys())
def test_a_post_is_answered_as_h11_answers_it(echoes: tuple[int, int], sends: list[bytes]) -> None:
    lean, h11_only = echoes

    answers = _conversation(lean, sends)

    assert answers == _conversation(h11_only, sends)
    assert answers  # every request here is answered


def test_a_plain_posts_body_reaches_the_app_in_one_message(echoes: tuple[int, int]) -> None:
    lean, _ = echoes

    answers = _conversation(lean, [_post(JSON, LENGTH, target=b"/parts")])

    body = answers[0].partition(b"\r\n\r\n")[2]
    assert body == repr([{"type": "http.request", "body": JSON, "more_body": False}]).encode()
