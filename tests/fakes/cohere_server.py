"""A fake Cohere v2 API (chat and embed) that the official ``cohere`` SDK accepts.

In-process::

    with FakeCohere.start(api_key="co-test") as fake:
        fake.fail_next(status=429, retry_after=5)
        ...  # cohere.AsyncClientV2(api_key=..., base_url=fake.base_url)

In another process::

    python -m tests.fakes.cohere_server --port 8092 [--latency 0.5] [--api-key K]

prints ``FAKE_COHERE_READY http://127.0.0.1:8092`` (the value for ``CO_API_URL``) and
serves until SIGTERM/SIGINT. Controls as in :mod:`tests.fakes.base`.

Embeddings come from :func:`tests.fakes.embeddings.fake_embedding`, the same function the
fake OpenAI server uses, so a document embedded by one and a query embedded by the other
still match. ``input_type`` is required on ``/v2/embed``, as on the real API, and
recorded, so tests can see which one was sent; at most 96 texts per call. A chat with
``response_format`` ``{"type": "json_object", "json_schema": …}`` is answered with a JSON
object generated from the schema (or queued by ``answer_next``).
"""

from __future__ import annotations

import json
import uuid
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.fakes.base import (
    ErrorDefault,
    FakeProviderServer,
    Handler,
    serve_from_command_line,
    text_of,
)
from tests.fakes.embeddings import count_tokens, fake_embedding

__all__ = ["MAX_EMBED_TEXTS", "READY_PREFIX", "FakeCohere"]

READY_PREFIX = "FAKE_COHERE_READY"
MAX_EMBED_TEXTS = 96
INPUT_TYPES = frozenset({"search_document", "search_query", "classification", "clustering"})


class FakeCohere(FakeProviderServer):
    name: ClassVar[str] = "cohere"
    ready_prefix: ClassVar[str] = READY_PREFIX
    api_prefix: ClassVar[str] = "/v2/"
    error_defaults: ClassVar[dict[int, ErrorDefault]] = {
        400: ErrorDefault("bad_request", "invalid request"),
        401: ErrorDefault("unauthorized", "invalid api token"),
        403: ErrorDefault("forbidden", "forbidden"),
        404: ErrorDefault("not_found", "model not found"),
        422: ErrorDefault("unprocessable_entity", "unprocessable entity"),
        429: ErrorDefault("too_many_requests", "You are past the per-minute request limit."),
        498: ErrorDefault("invalid_token", "invalid api token"),
        500: ErrorDefault("internal_server_error", "internal server error"),
        503: ErrorDefault("service_unavailable", "service unavailable"),
    }

    def api_routes(self) -> list[tuple[str, Handler, list[str]]]:
        return [
            ("/v2/chat", self._chat, ["POST"]),
            ("/v2/embed", self._embed, ["POST"]),
        ]

    def error_response(
        self,
        status: int,
        message: str,
        *,
        type_: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        return JSONResponse(
            {"id": str(uuid.uuid4()), "message": message}, status_code=status, headers=headers
        )

    def authorised(self, request: Request) -> Response | None:
        if self.api_key is None:
            return None
        supplied = request.headers.get("authorization", "")
        if not supplied:
            return self.error_response(401, "no api key supplied")
        if supplied != f"Bearer {self.api_key}":
            return self.error_response(401, "invalid api token")
        return None

    def _invalid(self, message: str) -> Response:
        return self.error_response(400, message)

    async def _chat(self, request: Request, body: Any) -> Response:
        if not isinstance(body, dict):
            return self._invalid("invalid request: the body is not valid JSON")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self._invalid("invalid request: model must be a non-empty string")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._invalid("invalid request: messages must be a non-empty list")
        if body.get("stream"):
            return self._invalid("invalid request: streaming is not supported by the fake")
        temperature = body.get("temperature")
        if temperature is not None and not (0 <= temperature <= 2):
            return self._invalid("invalid request: temperature must be between 0 and 2")
        response_format = body.get("response_format")
        schema: Any = None
        if response_format is not None:
            kind = response_format.get("type") if isinstance(response_format, dict) else None
            if kind not in ("text", "json_object"):
                return self._invalid(
                    "invalid request: response_format.type must be 'text' or 'json_object'"
                )
            schema = response_format.get("json_schema")
            if schema is not None and not isinstance(schema, dict):
                return self._invalid("invalid request: json_schema must be an object")
            if kind == "json_object" and schema is None:
                schema = {"type": "object"}
        if schema is not None:
            answer = self.structured_answer(schema, messages)
            text = answer if isinstance(answer, str) else json.dumps(answer)
        else:
            text = self.reply_text(body, messages)
        finish_reason = "COMPLETE"
        limit = body.get("max_tokens")
        if isinstance(limit, int) and count_tokens(text) > limit:
            text, finish_reason = " ".join(text.split()[:limit]), "MAX_TOKENS"
        input_tokens = sum(
            count_tokens(text_of(m.get("content"))) for m in messages if isinstance(m, dict)
        )
        output_tokens = count_tokens(text)
        usage = {"input_tokens": input_tokens, "output_tokens": output_tokens}
        return JSONResponse(
            {
                "id": str(uuid.uuid4()),
                "finish_reason": finish_reason,
                "message": {"role": "assistant", "content": [{"type": "text", "text": text}]},
                "usage": {"billed_units": usage, "tokens": usage},
            }
        )

    async def _embed(self, request: Request, body: Any) -> Response:
        if not isinstance(body, dict):
            return self._invalid("invalid request: the body is not valid JSON")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self._invalid("invalid request: model must be a non-empty string")
        input_type = body.get("input_type")
        if input_type not in INPUT_TYPES:
            return self._invalid(
                "invalid request: input_type must be one of " + ", ".join(sorted(INPUT_TYPES))
            )
        texts = body.get("texts")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return self._invalid("invalid request: texts must be a non-empty list of strings")
        if len(texts) > MAX_EMBED_TEXTS:
            return self._invalid(
                f"invalid request: total number of texts must be at most {MAX_EMBED_TEXTS} "
                f"- received {len(texts)}"
            )
        types = body.get("embedding_types") or ["float"]
        if any(kind != "float" for kind in types):
            return self._invalid("invalid request: the fake only returns float embeddings")
        dim = body.get("output_dimension") or self.embedding_dim
        tokens = sum(count_tokens(t) for t in texts)
        return JSONResponse(
            {
                "id": str(uuid.uuid4()),
                "texts": texts,
                "embeddings": {"float": [fake_embedding(t, dim) for t in texts]},
                "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": tokens}},
                "response_type": "embeddings_by_type",
            }
        )


if __name__ == "__main__":
    serve_from_command_line(FakeCohere)
