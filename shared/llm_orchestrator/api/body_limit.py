"""A cap on request bodies, so one request cannot make the server buffer and store
megabytes it will only refuse later. API Gateway caps payloads at 10 MB; the local server
applies the same cap itself.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 10 * 1024 * 1024


def _too_large(max_bytes: int) -> HTTPException:
    # An HTTPException, because FastAPI turns any other error raised while it reads a body
    # into "400 There was an error parsing the body".
    return HTTPException(413, f"Request body larger than the limit of {max_bytes} bytes")


class BodySizeLimitMiddleware:
    """Counts the body as the app reads it; the error is raised from ``receive`` so that it
    surfaces inside the app, where the error handlers answer it in the envelope (413
    ``validation_error``)."""

    def __init__(self, app: ASGIApp, *, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        announced_too_large = declared is not None and (
            not declared.isdigit() or int(declared) > self.max_bytes
        )
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if announced_too_large:
                raise _too_large(self.max_bytes)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _too_large(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)
