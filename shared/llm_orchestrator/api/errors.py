"""One table from domain exceptions to HTTP status and error code, and the error envelope
``{code, message, details, request_id}`` for every non-2xx answer."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from llm_orchestrator.api.headers import REQUEST_ID_HEADER, request_id_of
from llm_orchestrator.errors import (
    Conflict,
    Forbidden,
    NotFound,
    OrchestratorError,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    ValidationFailed,
)
from llm_orchestrator.redaction import redact, redact_data

log = logging.getLogger(__name__)

ERROR_TABLE: dict[type[OrchestratorError], tuple[int, str]] = {
    ValidationFailed: (400, "validation_error"),
    Unauthorized: (401, "unauthorized"),
    Forbidden: (403, "forbidden"),
    NotFound: (404, "not_found"),
    Conflict: (409, "conflict"),
    RateLimited: (429, "rate_limited"),
    # An extension of the reference's code table: a dependency (the database) did not answer
    # in time; the answer carries ``Retry-After``.
    ServiceUnavailable: (503, "service_unavailable"),
}

_HTTP_STATUS_CODES = {
    400: "validation_error",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "validation_error",
    409: "conflict",
    413: "validation_error",
    415: "validation_error",
    429: "rate_limited",
}


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    request_id = request_id_of(request)
    body = {
        "code": code,
        "message": redact(message),
        "details": redact_data(details or {}),
        "request_id": request_id,
    }
    all_headers = {REQUEST_ID_HEADER: request_id, **(headers or {})}
    if status == 401:
        all_headers.setdefault("WWW-Authenticate", 'Bearer realm="llm-orchestrator"')
    return JSONResponse(body, status_code=status, headers=all_headers)


def status_for(exc: OrchestratorError) -> tuple[int, str]:
    for klass in type(exc).__mro__:
        if klass in ERROR_TABLE:
            return ERROR_TABLE[klass]
    return 500, "internal_error"


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OrchestratorError)
    status, code = status_for(exc)
    if status in (401, 403):
        from llm_orchestrator.api.audit_log import record_refusal

        await record_refusal(request, status, exc.message)
    headers = exc.headers if isinstance(exc, RateLimited | ServiceUnavailable) else None
    return error_response(request, status, code, exc.message, exc.details, headers)


def field_path(loc: Sequence[int | str]) -> str:
    """``("body", "steps", 1, "depends_on", 0)`` → ``steps[1].depends_on[0]``."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:] or [parts[0]]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not isinstance(part, str) or part.startswith(("function-", "tagged-union")):
            continue
        else:
            out += f".{part}" if out else part
    return out or "body"


def _readable(error: dict[str, Any]) -> str:
    if error.get("type") == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "invalid JSON")
        return f"Malformed JSON body: {reason}"
    if error.get("type") == "missing" and tuple(error.get("loc", ())) == ("body",):
        return "A JSON request body is required"
    return str(error.get("msg", "Invalid value")).removeprefix("Value error, ")


async def _request_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "field": "body" if e.get("type") == "json_invalid" else field_path(e.get("loc", ())),
            "message": _readable(e),
        }
        for e in exc.errors()
    ]
    return error_response(
        request, 400, "validation_error", "Request validation failed", {"errors": errors}
    )


def _allowed_methods(request: Request) -> str | None:
    """Every method of every route on the request's path (``create_app`` lists them)."""
    path = request.scope["path"]
    root_path = request.scope.get("root_path", "")
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :]
    table = getattr(request.app.state, "route_methods", ())
    methods = {
        method for regex, route_methods in table if regex.match(path) for method in route_methods
    }
    return ", ".join(sorted(methods)) or None


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_STATUS_CODES.get(exc.status_code, "internal_error")
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        message = f"No route for {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}"
        if allowed := _allowed_methods(request):
            headers["Allow"] = allowed
    else:
        message = str(exc.detail)
    return error_response(request, exc.status_code, code, message, headers=headers)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(request, 500, "internal_error", "Internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(OrchestratorError, _domain_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
