"""Plain requests to the most frequent reads, answered without FastAPI's per-request
dependency resolution.

FastAPI resolves a route's dependencies and parameters anew on every request: for each
dependency a recursive solve with its cache key, for each query parameter (present or not)
a validation through pydantic, then the endpoint, then the response model. On an
authenticated ``GET /workflows`` that machinery cost more CPU than the route's own work
(cProfile, in-process: about a third of the request's Python time). So a route may name a
*fast path*, a function that answers the requests whose parameters are plainly well-formed
by doing exactly what the dependencies and the endpoint would do, in the same order: the
app-wide input check, the caller's authentication and permission, the endpoint's body. It
returns :data:`NOT_PLAIN` for anything else (before doing any work), and FastAPI handles
that request as before, so every error a request can get is FastAPI's own. The answer is
serialised through the route's response model just as FastAPI does, and the OpenAPI
document is still generated from the route's declared signature.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Container, Coroutine
from typing import Any, Final, TypeVar

from fastapi.exceptions import ResponseValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

NOT_PLAIN: Final = object()
"""What a fast path returns for a request it leaves to FastAPI."""

FastPath = Callable[[Request], Awaitable[Any]]
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


def fast_path(answer: FastPath) -> Callable[[Endpoint], Endpoint]:
    """Declare ``answer`` the fast path of the decorated endpoint (its route's class must
    be :class:`FastPathRoute`)."""

    def mark(endpoint: Endpoint) -> Endpoint:
        endpoint.fast_path = answer  # type: ignore[attr-defined]
        return endpoint

    return mark


class FastPathRoute(APIRoute):
    """An ``APIRoute`` whose endpoint's fast path, if it has one, answers first."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        full = super().get_route_handler()
        answer: FastPath | None = getattr(self.endpoint, "fast_path", None)
        field = self.response_field
        if answer is None or field is None:
            return full
        status_code = self.status_code or 200
        options: dict[str, Any] = {
            "include": self.response_model_include,
            "exclude": self.response_model_exclude,
            "by_alias": self.response_model_by_alias,
            "exclude_unset": self.response_model_exclude_unset,
            "exclude_defaults": self.response_model_exclude_defaults,
            "exclude_none": self.response_model_exclude_none,
        }

        async def handler(request: Request) -> Response:
            content = await answer(request)
            if content is NOT_PLAIN:
                return await full(request)
            # As FastAPI's own handler serialises a route's answer (``serialize_response``
            # with ``dump_json``): validated against the response model, then JSON bytes.
            value, errors = field.validate(content, {}, loc=("response",))
            if errors:
                raise ResponseValidationError(errors=errors, body=content)
            return Response(
                content=field.serialize_json(value, **options),
                status_code=status_code,
                media_type="application/json",
            )

        return handler


def plain_query(request: Request, names: Container[str]) -> dict[str, str] | None:
    """The query's values by name when every parameter is one of ``names`` and given once;
    None otherwise."""
    query = request.query_params
    items = query.multi_items()
    if len(items) != len(query) or not all(name in names for name, _ in items):
        return None
    return dict(items)


def plain_int(text: str | None, default: int, lowest: int, highest: int) -> int | None:
    """``text`` as an int in ``lowest..highest`` (``default`` when absent), if written as
    plain ASCII digits; None for anything else."""
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        return None
    value = int(text)
    return value if lowest <= value <= highest else None
