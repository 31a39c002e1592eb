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
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


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

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class EnvelopeH11Protocol(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(
            CoalescingTransport(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
        )

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
