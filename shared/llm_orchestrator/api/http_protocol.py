"""uvicorn's HTTP/1.1 protocol, answering requests it cannot parse in the API's envelope.

uvicorn refuses a request it cannot parse (a raw 0xFF in the request line, a malformed
header) before any application sees it, with a plain-text ``400 Invalid HTTP request
received.``. ``llmo serve`` runs this subclass instead, so even that answer is
``{code, message, details, request_id}`` with an ``X-Request-ID``. On AWS, API Gateway
parses requests and answers malformed ones itself, in its own format, before a Lambda runs.

It also writes a response in one ``send`` instead of two: uvicorn writes the status line
and headers when the app starts the response, then the body, each straight to the socket;
on a small answer (``GET /workflows``) that second system call, and the second segment the
client wakes for, was a tenth of the request's CPU. The writes of one turn of the event
loop now go out together at the end of that turn (:class:`CoalescingTransport`), so
nothing waits for a later write: a streamed response's headers still leave at once.

And it answers the plainest requests without h11 (:class:`_LeanCycle`): h11 parses every
request into events, validates every header of the answer again and walks its state
machine, about a fifth of a small read's CPU. A request that arrives whole on an idle
connection, ``GET`` over HTTP/1.1 with one ``Host``, no body, no ``Connection``,
``Expect`` or ``Upgrade``, each line matching h11's own grammar, goes to the app as uvicorn
would pass it (the same scope, ``receive`` and ``send``); so does a ``POST`` of the same
kind with one plain ``Content-Length`` (digits only) whose body came with its head, whole
and with nothing behind it (a submit): the app receives the body in one message, as uvicorn
gives a body that h11 read in one piece. An answer with a
``Content-Length`` that matches its one body is written, head and body together, as the
bytes h11 writes for it. Anything else (a request in doubt, an answer without a length, a
streamed or chunked one, an error) is h11's as before: the request's bytes are handed to
h11 then, and uvicorn's own cycle goes on; an answer without a length hands over at its
head, so a streamed head still leaves at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from typing import Any
from urllib.parse import unquote

import h11
from h11 import _abnf
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol, RequestResponseCycle
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string


class CoalescingTransport:
    """``transport`` with the writes of one turn of the event loop sent as one: the first
    write of a turn schedules the send for the end of the turn; a close, or a write of
    the end of the stream, sends what is pending first. Everything else is the
    transport's own."""

    __slots__ = ("_transport", "_pending", "_loop")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._pending: list[bytes] = []
        self._loop = loop

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        pending = self._pending
        if not pending:
            self._loop.call_soon(self._flush)
        pending.append(bytes(data))

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        pending = self._pending
        if pending:
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            pending.clear()
            self._transport.write(data)

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._transport.abort()

    def write_whole(self, data: bytes) -> None:
        """``data`` sent now (after what is pending, if anything is)."""
        if self._pending:
            self._pending.append(data)
        else:
            self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


# h11's own grammar (RFC 9112), so that what the lean path accepts h11 would accept too.
_REQUEST_LINE = re.compile(_abnf.request_line.encode("ascii"))
_HEADER_FIELD = re.compile(_abnf.header_field.encode("ascii"))
_FIELD_NAME = re.compile(_abnf.field_name.encode("ascii"))
_LEAN_HEAD_LIMIT = 8192
"""The longest request head the lean path reads (h11 takes up to 16 KiB by default)."""
_NOT_LEAN = frozenset(
    (b"content-length", b"transfer-encoding", b"connection", b"expect", b"upgrade")
)
"""Request headers that ask for more than the lean path does (a body of another framing, a
close, a 100 Continue, another protocol): h11 handles such a request. A POST's one plain
``Content-Length`` is the exception."""
_LENGTH = re.compile(rb"[0-9]{1,20}")
"""A ``Content-Length`` as h11 takes it unchanged (``[0-9]+``, at most 20 digits): a list of
lengths, blanks or anything longer is h11's to judge."""


def _lean_request(data: bytes) -> tuple[bytes, bytes, list[tuple[bytes, bytes]], bytes] | None:
    """The method, target, headers (names lowercased, as uvicorn passes them) and body of
    ``data`` when it is exactly one plain request that h11 would accept as it stands: a
    ``GET`` head alone, or a ``POST`` head with one ``Content-Length`` and that many bytes
    of body after it, all of it here; None for anything else."""
    end = data.find(b"\r\n\r\n", 0, _LEAN_HEAD_LIMIT)
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    request = _REQUEST_LINE.fullmatch(lines[0])
    if request is None or request["http_version"] != b"1.1":
        return None
    method = request["method"]
    if method != b"GET" and method != b"POST":
        return None
    headers = []
    hosts = 0
    length = None
    for line in lines[1:]:
        # A folded or malformed line: no match.
        field = _HEADER_FIELD.fullmatch(line)
        if field is None:
            return None
        name = field["field_name"].lower()
        value = field["field_value"]
        if name in _NOT_LEAN:
            if (
                name != b"content-length"
                or method != b"POST"
                or length is not None
                or _LENGTH.fullmatch(value) is None
            ):
                return None
            length = int(value)
        hosts += name == b"host"
        headers.append((name, value))
    if hosts != 1:
        return None  # h11 refuses an HTTP/1.1 request without exactly one Host
    if method == b"POST" and length is None:
        return None  # a body framed otherwise (or none at all): h11's
    body = data[end + 4 :]
    # Less (the rest is on its way) or more (a request behind it): h11's.
    if len(body) != (length or 0):
        return None
    return method, request["target"], headers, body


_NAME_PLAIN, _NAME_LENGTH, _NAME_REFUSED = 0, 1, 2
_name_kinds: dict[Any, int] = {}
"""Answer header names seen, by what :func:`_whole_response` does with them."""
_BAD_VALUE = re.compile(rb"[\x00\n\v\f\r]|^[ \t]|[ \t]\Z")
"""What h11's ``field_value`` refuses: a byte it never allows, or a blank at either end."""
_valid_values: set[bytes] = set()
_KEPT = 4096
"""How many header names, and how many valid values, are remembered (each a bounded cache
of what recurs)."""
_RECURRING_VALUE_LENGTH = 32
"""Longer values (request ids: one per answer) are checked every time, not kept."""


def _name_kind(name: Any) -> int:
    kind = _name_kinds.get(name)
    if kind is None:
        if type(name) is not bytes or _FIELD_NAME.fullmatch(name) is None:
            kind = _NAME_REFUSED
        else:
            lower = name.lower()
            kind = (
                _NAME_LENGTH
                if lower == b"content-length"
                else _NAME_REFUSED
                if lower in (b"transfer-encoding", b"connection", b"host")
                else _NAME_PLAIN
            )
        if len(_name_kinds) < _KEPT:
            _name_kinds[name] = kind
    return kind


def _valid_value(value: Any) -> bool:
    if value in _valid_values:
        return True
    if type(value) is not bytes or _BAD_VALUE.search(value) is not None:
        return False
    if len(value) <= _RECURRING_VALUE_LENGTH and len(_valid_values) < _KEPT:
        _valid_values.add(value)  # the same few come back (date, types, limits)
    return True


def _whole_response(status: Any, headers: list[tuple[bytes, bytes]], body: Any) -> bytes | None:
    """The bytes h11 writes for this answer to a kept-alive ``GET`` or ``POST`` (status
    line, headers as given, body), when its framing is a ``Content-Length`` that matches
    ``body`` and h11 would change nothing in it; None otherwise."""
    if type(status) is not int or not 200 <= status < 600 or status in (204, 304):
        return None
    if not isinstance(body, bytes):
        return None
    length = None
    out = [b"HTTP/1.1 %d %s\r\n" % (status, STATUS_PHRASES[status])]
    append = out.append
    try:
        for name, value in headers:
            kind = _name_kind(name)
            if kind:
                if kind != _NAME_LENGTH or length is not None:
                    return None
                length = value
            if not _valid_value(value):
                return None
            append(name)
            append(b": ")
            append(value)
            append(b"\r\n")
    except TypeError:  # a name or value that is not even hashable: h11's to refuse
        return None
    if length != b"%d" % len(body):
        return None
    append(b"\r\n")
    append(body)
    return b"".join(out)


def _declares_length(start: Any) -> bool:
    return any(
        type(name) is bytes and name.lower() == b"content-length"
        for name, _ in start.get("headers", ())
    )


class _LeanCycle(RequestResponseCycle):
    """uvicorn's request-response cycle for a request h11 has not seen (see the module's
    docstring): the answer is written whole when :func:`_whole_response` can, else the
    request goes to h11 and uvicorn's cycle carries on from there."""

    def __init__(
        self, protocol: EnvelopeH11Protocol, scope: Any, request: bytes, body: bytes
    ) -> None:
        super().__init__(
            scope=scope,
            conn=protocol.conn,
            transport=protocol.transport,
            flow=protocol.flow,
            logger=protocol.logger,
            access_logger=protocol.access_logger,
            access_log=protocol.access_log,
            default_headers=protocol.server_state.default_headers,
            message_event=asyncio.Event(),
            on_response=protocol.lean_response_complete,
        )
        # The request, its body included, is all there: what h11's Data and EndOfMessage do.
        self.body = bytearray(body)
        self.more_body = False
        self.message_event.set()
        self._request = request
        self._start: Any = None
        self._handed_over = False

    async def send(self, message: Any) -> None:
        if self._handed_over:
            await super().send(message)
            return
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()  # pragma: no cover - a client that stops reading
        if self.disconnected:
            return
        if self._start is None:
            if message["type"] != "http.response.start" or not _declares_length(message):
                # Not an answer of one known length: its head leaves now, as h11's would.
                await self._hand_over(message)
                return
            self._start = message
            self.response_started = True
            return
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            start = self._start
            whole = _whole_response(
                start["status"],
                self.default_headers + list(start.get("headers", [])),
                message.get("body", b""),
            )
            if whole is not None:
                # uvicorn formats the line before its logger drops it; asked first here.
                if self.access_log and self.access_logger.isEnabledFor(logging.INFO):
                    self.access_logger.info(
                        '%s - "%s %s HTTP/%s" %d',
                        get_client_addr(self.scope),
                        self.scope["method"],
                        get_path_with_query_string(self.scope),
                        self.scope["http_version"],
                        start["status"],
                    )
                self.response_complete = True
                self.message_event.set()
                self.transport.write_whole(whole)  # type: ignore[attr-defined]
                if not self.keep_alive:  # the server is shutting down
                    self.conn.send(h11.ConnectionClosed())
                    self.transport.close()
                self.on_response()
                return
        await self._hand_over(message)

    async def _hand_over(self, message: Any) -> None:
        """h11 reads the request now, and uvicorn's cycle sends what the app sent so far
        and ``message``."""
        self._handed_over = True
        conn = self.conn
        conn.receive_data(self._request)
        request = conn.next_event()
        assert type(request) is h11.Request
        end = conn.next_event()
        while type(end) is h11.Data:  # the body the app has been given already
            end = conn.next_event()
        assert type(end) is h11.EndOfMessage
        start, self._start = self._start, None
        if start is not None:
            self.response_started = False
            await super().send(start)
        await super().send(message)


class EnvelopeH11Protocol(H11Protocol):
    _held: bytearray | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(
            CoalescingTransport(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
        )

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        if type(cycle) is _LeanCycle and not cycle.response_complete:
            # Pipelined behind a request on the lean path: read once it is answered.
            held = self._held
            if held is None:
                held = self._held = bytearray()
            held += data
            if len(held) > HIGH_WATER_LIMIT:
                self.flow.pause_reading()
            return
        conn = self.conn
        if (
            (cycle is None or cycle.response_complete)
            and conn.our_state is h11.IDLE
            and conn.their_state is h11.IDLE
            and not conn.trailing_data[0]
            and self.limit_concurrency is None
            and not self.config.reset_contextvars
        ):
            lean = _lean_request(data)
            if lean is not None:
                self._unset_keepalive_if_required()
                self._start_lean(data, *lean)
                return
        super().data_received(data)

    def _start_lean(
        self,
        request: bytes,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> None:
        """What uvicorn does with a parsed request (``handle_events``), but for h11."""
        self.headers = headers
        raw_path, _, query_string = target.partition(b"?")
        root_path = self.root_path
        self.scope = {
            "type": "http",
            "asgi": {"version": self.asgi_version, "spec_version": "2.3"},
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,  # type: ignore[typeddict-item]
            "method": "GET" if method == b"GET" else "POST",
            "root_path": root_path,
            "path": root_path + unquote(raw_path.decode("ascii")),
            "raw_path": root_path.encode("ascii") + raw_path,
            "query_string": query_string,
            "headers": headers,
            "state": self.app_state.copy(),
        }
        cycle = self.cycle = _LeanCycle(self, self.scope, request, body)
        task = self.loop.create_task(cycle.run_asgi(self.app))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    def lean_response_complete(self) -> None:
        """A lean request answered: uvicorn's end of a response, then what came behind it."""
        self.on_response_complete()
        held = self._held
        if held:
            self._held = None
            if not self.transport.is_closing():
                self.data_received(bytes(held))

    def send_400_response(self, msg: str) -> None:
        request_id = f"req-{uuid.uuid4()}"
        body = json.dumps(
            {
                "code": "validation_error",
                "message": f"Malformed HTTP request: {msg}",
                "details": {},
                "request_id": request_id,
            }
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"x-request-id", request_id.encode()),
            (b"connection", b"close"),
        ]
        self.transport.write(
            self.conn.send(h11.Response(status_code=400, headers=headers, reason=b"Bad Request"))
            or b""
        )
        self.transport.write(self.conn.send(h11.Data(data=body)) or b"")
        self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        self.transport.close()
