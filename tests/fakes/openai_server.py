"""A fake OpenAI HTTP API that the official SDK accepts, for tests that need real HTTP.

In-process::

    with FakeOpenAI.start(api_key="sk-test") as fake:
        fake.latency = 0.5
        fake.fail_next(status=429, retry_after=1)
        fake.hold()  # later requests wait for fake.release() (fake.held_count tells)
        ...  # point a client at fake.base_url
        assert fake.requests_to("/v1/chat/completions")

In another process::

    python -m tests.fakes.openai_server --port 0 --latency 0.0 [--api-key K]

prints ``FAKE_OPENAI_READY http://127.0.0.1:PORT/v1`` once it accepts connections and
serves until SIGTERM/SIGINT. Controls as in :mod:`tests.fakes.base`.
"""

from __future__ import annotations

import base64
import json
import re
import struct
import time
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.fakes.base import (
    ErrorDefault,
    FakeProviderServer,
    Handler,
    InjectedFailure,
    RecordedRequest,
    masked,
    serve_from_command_line,
    text_of,
)
from tests.fakes.embeddings import DEFAULT_DIM, count_tokens, fake_embedding

__all__ = [
    "DEFAULT_MODELS",
    "FakeOpenAI",
    "InjectedFailure",
    "RecordedRequest",
    "count_tokens",
    "fake_embedding",
]

DEFAULT_MODELS = frozenset({"gpt-4", "gpt-4o", "gpt-4o-mini", "text-embedding-3-small"})
READY_PREFIX = "FAKE_OPENAI_READY"


class FakeOpenAI(FakeProviderServer):
    """The fake server plus its run-time controls and request log."""

    name: ClassVar[str] = "openai"
    ready_prefix: ClassVar[str] = READY_PREFIX
    api_prefix: ClassVar[str] = "/"
    # OpenAI's own (type, message, code) for each status.
    error_defaults: ClassVar[dict[int, ErrorDefault]] = {
        400: ErrorDefault("invalid_request_error", "Invalid request."),
        401: ErrorDefault(
            "invalid_request_error", "Incorrect API key provided.", "invalid_api_key"
        ),
        403: ErrorDefault(
            "invalid_request_error", "Forbidden.", "unsupported_country_region_territory"
        ),
        404: ErrorDefault("invalid_request_error", "The model does not exist.", "model_not_found"),
        422: ErrorDefault("invalid_request_error", "Unprocessable request."),
        429: ErrorDefault("requests", "Rate limit reached for requests.", "rate_limit_exceeded"),
        500: ErrorDefault("server_error", "The server had an error while processing your request."),
        502: ErrorDefault("server_error", "Bad gateway."),
        503: ErrorDefault(
            "server_error", "The engine is currently overloaded, please try again later."
        ),
    }

    def __init__(
        self,
        *,
        api_key: str | None = None,
        latency: float = 0.0,
        models: frozenset[str] | None = None,
        embedding_dim: int = DEFAULT_DIM,
    ) -> None:
        self._initial_models = models
        self.models = models
        """When set, other model names get OpenAI's 404 ``model_not_found``; None accepts any."""
        super().__init__(api_key=api_key, latency=latency, embedding_dim=embedding_dim)

    @property
    def base_url(self) -> str:
        """What an OpenAI client takes as ``base_url``."""
        return f"{self.url}/v1"

    def reset(self) -> None:
        super().reset()
        self.models = self._initial_models

    def api_routes(self) -> list[tuple[str, Handler, list[str]]]:
        return [
            ("/v1/chat/completions", self._chat, ["POST"]),
            ("/v1/embeddings", self._embeddings, ["POST"]),
            ("/v1/models", self._models, ["GET"]),
        ]

    def error_response(
        self,
        status: int,
        message: str,
        *,
        type_: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> Response:
        error = {
            "message": message,
            "type": type_ or "invalid_request_error",
            "param": param,
            "code": code,
        }
        return JSONResponse({"error": error}, status_code=status, headers=headers)

    def authorised(self, request: Request) -> Response | None:
        if self.api_key is None:
            return None
        supplied = request.headers.get("authorization", "")
        if not supplied:
            return self.error_response(
                401, "You didn't provide an API key.", code="invalid_api_key"
            )
        if supplied != f"Bearer {self.api_key}":
            key = supplied.removeprefix("Bearer ")
            return self.error_response(
                401, f"Incorrect API key provided: {masked(key)}.", code="invalid_api_key"
            )
        return None

    async def not_found(self, request: Request, body: Any) -> Response:
        # What OpenAI answers for a wrong path, e.g. a base_url missing its "/v1".
        return self.error_response(404, f"Invalid URL ({request.method} {request.url.path})")

    def _unknown_model(self, body: dict[str, Any]) -> Response | None:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self.error_response(400, "you must provide a model parameter", param="model")
        if self.models is not None and model not in self.models:
            return self.error_response(
                404,
                f"The model `{model}` does not exist or you do not have access to it.",
                code="model_not_found",
            )
        return None

    async def _chat(self, request: Request, body: Any) -> Response:
        if not isinstance(body, dict):
            return self.error_response(400, "We could not parse the JSON body of your request.")
        problem = self._unknown_model(body)
        if problem is not None:
            return problem
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self.error_response(
                400, "'messages' must be a non-empty array", param="messages"
            )
        if body.get("stream"):
            return self.error_response(
                400, "streaming is not supported by the fake", param="stream"
            )
        schema, problem = _json_schema_of(body.get("response_format"))
        if problem is not None:
            return self.error_response(400, problem, param="response_format")
        if schema is not None:
            answer = self.structured_answer(schema, messages)
            text = answer if isinstance(answer, str) else json.dumps(answer)
        else:
            text = self.reply_text(body, messages)
        finish_reason = "stop"
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and count_tokens(text) > limit:
            text, finish_reason = " ".join(text.split()[:limit]), "length"
        prompt_tokens = sum(
            count_tokens(text_of(m.get("content"))) for m in messages if isinstance(m, dict)
        )
        completion_tokens = count_tokens(text)
        return JSONResponse(
            {
                "id": f"chatcmpl-fake{next(self._ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "system_fingerprint": "fp_fake",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )

    async def _embeddings(self, request: Request, body: Any) -> Response:
        if not isinstance(body, dict):
            return self.error_response(400, "We could not parse the JSON body of your request.")
        problem = self._unknown_model(body)
        if problem is not None:
            return problem
        raw_input = body.get("input")
        texts = [raw_input] if isinstance(raw_input, str) else raw_input
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return self.error_response(
                400, "'input' must be a string or a non-empty array of strings", param="input"
            )
        dim = body.get("dimensions") or self.embedding_dim
        if not isinstance(dim, int) or dim <= 0:
            return self.error_response(
                400, "'dimensions' must be a positive integer", param="dimensions"
            )
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = fake_embedding(text, dim)
            encoded: Any = (
                base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode() if as_base64 else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(count_tokens(t) for t in texts)
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def _models(self, request: Request, body: Any) -> Response:
        names = sorted(self.models if self.models is not None else DEFAULT_MODELS)
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": 0, "owned_by": "fake-openai"}
                    for name in names
                ],
            }
        )


_SCHEMA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _json_schema_of(response_format: Any) -> tuple[Any, str | None]:
    """``(schema, None)`` for a ``json_schema`` response format OpenAI would accept,
    ``(None, None)`` without one, ``(None, why)`` for one it refuses (400)."""
    if response_format is None or (
        isinstance(response_format, dict) and response_format.get("type") == "text"
    ):
        return None, None
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None, "response_format: the fake speaks only 'text' and 'json_schema'"
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        return None, "Missing required parameter: 'response_format.json_schema'."
    name = spec.get("name")
    if not isinstance(name, str) or not _SCHEMA_NAME.match(name):
        return None, (
            "Invalid 'response_format.json_schema.name': string does not match pattern. "
            "Expected a string that matches the pattern '^[a-zA-Z0-9_-]+$'."
        )
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        return None, "Invalid 'response_format.json_schema.schema': expected an object."
    if spec.get("strict"):
        problem = _strict_problem(schema, ())
        if problem is not None:
            return None, f"Invalid schema for response_format '{name}': {problem}"
    return schema, None


def _strict_problem(schema: Any, context: tuple[str, ...]) -> str | None:
    """What strict mode refuses (as OpenAI words it): an object that is not closed, or
    that does not require every one of its properties."""
    if not isinstance(schema, dict):
        return None
    where = f"In context={context}"
    is_object = schema.get("type") == "object" or "properties" in schema
    if is_object:
        if schema.get("additionalProperties") is not False:
            return f"{where}, 'additionalProperties' is required to be supplied and to be false."
        properties = schema.get("properties") or {}
        missing = [key for key in properties if key not in (schema.get("required") or [])]
        if missing:
            return (
                f"{where}, 'required' is required to be supplied and to be an array including "
                f"every key in properties. Missing '{missing[0]}'."
            )
        for key, sub in properties.items():
            problem = _strict_problem(sub, (*context, "properties", key))
            if problem is not None:
                return problem
    children: list[tuple[str, Any]] = []
    if isinstance(schema.get("items"), dict):
        children.append(("items", schema["items"]))
    if isinstance(schema.get("$defs"), dict):
        children.extend(("$defs", child) for child in schema["$defs"].values())
    if isinstance(schema.get("anyOf"), list):
        children.extend(("anyOf", child) for child in schema["anyOf"])
    for key, child in children:
        problem = _strict_problem(child, (*context, key))
        if problem is not None:
            return problem
    return None


if __name__ == "__main__":
    serve_from_command_line(FakeOpenAI)
