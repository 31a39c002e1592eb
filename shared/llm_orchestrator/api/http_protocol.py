"""uvicorn's HTTP/1.1 protocol, answering requests it cannot parse in the API's envelope.

uvicorn refuses a request it cannot parse (a raw 0xFF in the request line, a malformed
header) before any application sees it, with a plain-text ``400 Invalid HTTP request
received.``. ``llmo serve`` runs this subclass instead, so even that answer is
``{code, message, details, request_id}`` with an ``X-Request-ID``. On AWS, API Gateway
parses requests and answers malformed ones itself, in its own format, before a Lambda runs.
"""

from __future__ import annotations

import json
import uuid

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class EnvelopeH11Protocol(H11Protocol):
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
