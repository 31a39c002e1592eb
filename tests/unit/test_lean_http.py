"""The lean path of ``llmo serve``'s HTTP protocol reads only requests h11 reads the same
way, and writes only the bytes h11 writes for the same answer."""

from __future__ import annotations

import random
import re

import h11
from h11 import _abnf
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES

from llm_orchestrator.api.http_protocol import _lean_request, _whole_response

PLAIN = (
    b"GET /api/v1/workflows?limit=5 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    b"Authorization: Bearer abc.def.ghi\r\nAccept: */*\r\nX-Request-ID: r-1\r\n\r\n"
)
DECLINED = [
    PLAIN.replace(b"GET", b"POST"),
    PLAIN.replace(b"GET", b"HEAD"),
    PLAIN.replace(b"HTTP/1.1", b"HTTP/1.0"),
    PLAIN.replace(b"Accept: */*", b"Connection: close"),
    PLAIN.replace(b"Accept: */*", b"Content-Length: 0"),
    PLAIN.replace(b"Accept: */*", b"Transfer-Encoding: chunked"),
    PLAIN.replace(b"Accept: */*", b"Expect: 100-continue"),
    PLAIN.replace(b"Accept: */*", b"Upgrade: websocket"),
    PLAIN.replace(b"Host: 127.0.0.1:8080\r\n", b""),
    PLAIN.replace(b"Accept: */*", b"Host: again"),
    PLAIN.replace(b"Accept: */*", b" folded"),
    PLAIN.replace(b"\r\n", b"\n"),
    PLAIN[:-2],
    PLAIN + PLAIN,
    b"\r\n" + PLAIN,
]
JSON = b'{"inputs": {"input": "x"}, "async": true}'
POST = (
    b"POST /api/v1/workflows/w-1/execute HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    b"Authorization: Bearer abc.def.ghi\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(JSON), JSON)
)
LENGTH = b"Content-Length: %d" % len(JSON)
DECLINED_POSTS = [
    POST.replace(b"POST", b"PUT"),
    POST.replace(b"HTTP/1.1", b"HTTP/1.0"),
    POST[:-1],
    POST + b"x",
    POST + PLAIN,
    POST.replace(LENGTH, b"Content-Length: %d" % (len(JSON) - 1)),
    POST.replace(LENGTH, b"Content-Length: %d, %d" % (len(JSON), len(JSON))),
    POST.replace(LENGTH, LENGTH + b"\r\n" + LENGTH),
    POST.replace(LENGTH, b"Content-Length: +%d" % len(JSON)),
    POST.replace(LENGTH, b"Content-Length: 0x2a"),
    POST.replace(LENGTH, b"Content-Length: " + b"0" * 19 + b"%d" % len(JSON)),
    POST.replace(LENGTH, b"Transfer-Encoding: chunked"),
    POST.replace(LENGTH, LENGTH + b"\r\nTransfer-Encoding: chunked"),
    POST.replace(LENGTH, LENGTH + b"\r\nExpect: 100-continue"),
    POST.replace(LENGTH, LENGTH + b"\r\nConnection: keep-alive"),
    POST.replace(LENGTH + b"\r\n", b""),
]
_PALETTE = [b"\x00", b" ", b"\t", b"\r", b"\n", b":", b"\x7f", b"\x80", b"a", b"?", b"%", b"\xff"]


def _h11_reads(data: bytes) -> tuple[h11.Request, bytes, h11.Connection] | None:
    """The request h11 reads from ``data``, its body, and the connection after it: None
    unless ``data`` is exactly one whole request."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    body = b""
    try:
        request = conn.next_event()
        event = conn.next_event()
        while type(event) is h11.Data:
            body += event.data
            event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    if type(request) is not h11.Request or type(event) is not h11.EndOfMessage:
        return None
    if conn.trailing_data[0]:
        return None  # something behind it
    return request, body, conn


def _mutations(seed: int, base: bytes, count: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        data = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data))
            if rng.random() < 0.5:
                data[at : at + 1] = rng.choice(_PALETTE)
            else:
                data[at:at] = rng.choice(_PALETTE)
        out.append(bytes(data))
    return out


def test_a_plain_get_is_read_as_h11_reads_it() -> None:
    lean = _lean_request(PLAIN)
    read = _h11_reads(PLAIN)

    assert lean is not None and read is not None
    request, body, conn = read
    headers = [(name, value) for name, value in request.headers]
    assert lean == (b"GET", request.target, headers, b"")
    assert body == b""
    assert conn.their_state is h11.DONE and conn.our_state is h11.SEND_RESPONSE


def test_a_plain_post_with_its_body_is_read_as_h11_reads_it() -> None:
    lean = _lean_request(POST)
    read = _h11_reads(POST)

    assert lean is not None and read is not None
    request, body, conn = read
    headers = [(name, value) for name, value in request.headers]
    assert lean == (b"POST", request.target, headers, JSON)
    assert body == JSON
    assert conn.their_state is h11.DONE and conn.our_state is h11.SEND_RESPONSE


def test_what_asks_for_more_than_a_plain_get_or_post_is_left_to_h11() -> None:
    assert [data for data in DECLINED if _lean_request(data) is not None] == []
    assert [data for data in DECLINED_POSTS if _lean_request(data) is not None] == []


def test_every_request_the_lean_path_reads_h11_reads_the_same_way() -> None:
    for seed, base in ((9, PLAIN), (10, POST)):
        read_lean = 0
        for data in _mutations(seed, base, 3000):
            lean = _lean_request(data)
            if lean is None:
                continue
            read_lean += 1
            read = _h11_reads(data)
            assert read is not None, data
            request, body, conn = read
            assert lean == (request.method, request.target, list(request.headers), body), data
            assert request.method in (b"GET", b"POST") and conn.their_state is h11.DONE, data
            assert conn.our_state is h11.SEND_RESPONSE, data
        assert read_lean > 100  # the mutations keep many requests plain


def _h11_writes(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes | None:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.next_event(), conn.next_event()
    try:
        reason = STATUS_PHRASES[status]
        out = conn.send(h11.Response(status_code=status, headers=headers, reason=reason))
        out = (out or b"") + (conn.send(h11.Data(data=body)) or b"")
        out += conn.send(h11.EndOfMessage()) or b""
    except h11.LocalProtocolError:
        return None
    return out


def test_an_answer_written_whole_is_the_bytes_h11_writes() -> None:
    body = b'{"workflows":[],"total":0}'
    headers = [
        (b"date", b"Tue, 01 Dec 2026 00:00:00 GMT"),
        (b"server", b"uvicorn"),
        (b"content-length", b"%d" % len(body)),
        (b"content-type", b"application/json"),
        (b"x-request-id", b"req-1"),
        (b"X-RateLimit-Remaining", b"59"),
    ]
    for status in (200, 201, 401, 429, 503, 599):
        whole = _whole_response(status, headers, body)
        assert whole is not None and whole == _h11_writes(status, headers, body)


def test_an_answer_h11_would_frame_or_refuse_otherwise_is_not_written_whole() -> None:
    body = b"{}"
    length = (b"content-length", b"2")
    assert _whole_response(200, [(b"content-type", b"text/plain")], body) is None
    assert _whole_response(200, [length, (b"content-length", b"2")], body) is None
    assert _whole_response(200, [(b"content-length", b"3")], body) is None
    assert _whole_response(204, [length], body) is None
    assert _whole_response(304, [length], body) is None
    assert _whole_response(101, [length], body) is None
    assert _whole_response(200, [length, (b"connection", b"close")], body) is None
    assert _whole_response(200, [length, (b"transfer-encoding", b"chunked")], body) is None
    assert _whole_response(200, [length, (b"bad name", b"x")], body) is None


def test_a_header_value_is_written_whole_exactly_when_h11_accepts_it() -> None:
    field_value = re.compile(_abnf.field_value.encode("ascii"))
    body = b"{}"
    values = [b"", b"a", b" a", b"a ", b"a\tb", b"a\x00b", b"\x80\xff"]
    values += _mutations(4, b"application/json; charset=utf-8", 2000)
    for value in values:
        headers = [(b"content-length", b"2"), (b"x-value", value)]
        whole = _whole_response(200, headers, body)
        assert (whole is not None) == (field_value.fullmatch(value) is not None), value
        if whole is not None:
            assert whole == _h11_writes(200, headers, body), value
