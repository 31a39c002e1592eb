"""A fake Anthropic Messages API that the official ``anthropic`` SDK accepts.

In-process::

    with FakeAnthropic.start(api_key="sk-ant-test") as fake:
        fake.fail_next(status=529)
        ...  # AsyncAnthropic(api_key=..., base_url=fake.base_url)

In another process::

    python -m tests.fakes.anthropic_server --port 8091 [--latency 0.5] [--api-key K]

prints ``FAKE_ANTHROPIC_READY http://127.0.0.1:8091`` (the value for
``ANTHROPIC_BASE_URL``) and serves until SIGTERM/SIGINT. Controls as in
:mod:`tests.fakes.base`.

What it checks like the real API does: the key (``x-api-key``, or ``Authorization:
Bearer`` as current SDKs send it), the ``anthropic-version`` header, ``model``,
``max_tokens`` (required), ``messages`` (non-empty, starting with ``user``),
``temperature`` in 0..1, ``tools`` (names, ``input_schema`` of type object) and a
``tool_choice`` naming one of them. A forced tool is answered with a ``tool_use`` block
whose ``input`` is generated from its schema (or queued by ``answer_next``). Errors
are Anthropic's ``{"type": "error", "error": {"type", "message"}}`` with a
``request-id`` header; 529 is ``overloaded_error``.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.fakes.base import (
    ErrorDefault,
    FakeProviderServer,
    Handler,
    masked,
    serve_from_command_line,
    text_of,
)
from tests.fakes.embeddings import count_tokens

__all__ = ["READY_PREFIX", "FakeAnthropic"]

READY_PREFIX = "FAKE_ANTHROPIC_READY"


class FakeAnthropic(FakeProviderServer):
    name: ClassVar[str] = "anthropic"
    ready_prefix: ClassVar[str] = READY_PREFIX
    api_prefix: ClassVar[str] = "/v1/"
    error_defaults: ClassVar[dict[int, ErrorDefault]] = {
        400: ErrorDefault("invalid_request_error", "Invalid request."),
        401: ErrorDefault("authentication_error", "invalid x-api-key"),
        403: ErrorDefault(
            "permission_error", "Your API key does not have permission to use this resource."
        ),
        404: ErrorDefault("not_found_error", "The requested resource could not be found."),
        422: ErrorDefault("invalid_request_error", "Unprocessable request."),
        413: ErrorDefault(
            "request_too_large", "Request exceeds the maximum allowed number of bytes."
        ),
        429: ErrorDefault("rate_limit_error", "Number of requests has exceeded your rate limit."),
        500: ErrorDefault("api_error", "Internal server error."),
        502: ErrorDefault("api_error", "Bad gateway."),
        503: ErrorDefault("api_error", "Service unavailable."),
        529: ErrorDefault("overloaded_error", "Overloaded"),
    }

    def api_routes(self) -> list[tuple[str, Handler, list[str]]]:
        return [
            ("/v1/messages", self._messages, ["POST"]),
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
    ) -> Response:
        request_id = f"req_fake{self.next_id()}"
        body = {
            "type": "error",
            "error": {"type": type_ or "api_error", "message": message},
            "request_id": request_id,
        }
        return JSONResponse(
            body, status_code=status, headers={**(headers or {}), "request-id": request_id}
        )

    def authorised(self, request: Request) -> Response | None:
        if "anthropic-version" not in request.headers:
            return self.error_response(
                400, "anthropic-version: header is required", type_="invalid_request_error"
            )
        if self.api_key is None:
            return None
        # Older SDKs send ``x-api-key``; current ones send the key as a bearer token.
        bearer = request.headers.get("authorization", "")
        supplied = request.headers.get("x-api-key", "") or bearer.removeprefix("Bearer ")
        if not supplied:
            return self.error_response(
                401, "x-api-key header is required", type_="authentication_error"
            )
        if supplied != self.api_key:
            return self.error_response(
                401, f"invalid x-api-key ({masked(supplied)})", type_="authentication_error"
            )
        return None

    def _invalid(self, message: str) -> Response:
        return self.error_response(400, message, type_="invalid_request_error")

    async def _messages(self, request: Request, body: Any) -> Response:
        if not isinstance(body, dict):
            return self._invalid("The request body is not valid JSON.")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self._invalid("model: Field required")
        max_tokens = body.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
            return self._invalid("max_tokens: Field required")
        if max_tokens < 1:
            return self._invalid("max_tokens: Input should be greater than or equal to 1")
        temperature = body.get("temperature")
        if temperature is not None and not (0 <= temperature <= 1):
            return self._invalid("temperature: Input should be less than or equal to 1")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self._invalid("messages: at least one message is required")
        if not all(
            isinstance(m, dict) and m.get("role") in ("user", "assistant") for m in messages
        ):
            return self._invalid("messages: roles must be 'user' or 'assistant'")
        if messages[0]["role"] != "user":
            return self._invalid('messages: first message must use the "user" role')
        for position, message in enumerate(messages):
            if message.get("content") in ("", []) and position != len(messages) - 1:
                return self._invalid(
                    f"messages.{position}: all messages must have non-empty content except "
                    "for the optional final assistant message"
                )
        if body.get("stream"):
            return self._invalid("stream: streaming is not supported by the fake")
        forced, problem = _forced_tool(body.get("tools"), body.get("tool_choice"))
        if problem is not None:
            return self._invalid(problem)
        content: list[dict[str, Any]]
        if forced is not None:
            answer = self.structured_answer(forced["input_schema"], messages)
            if isinstance(answer, dict):
                content = [
                    {
                        "type": "tool_use",
                        "id": f"toolu_fake{self.next_id()}",
                        "name": forced["name"],
                        "input": answer,
                    }
                ]
                text, stop_reason = json.dumps(answer), "tool_use"
            else:
                # A model that ignored the forced tool (or a test that says it did).
                text = answer if isinstance(answer, str) else json.dumps(answer)
                content, stop_reason = [{"type": "text", "text": text}], "end_turn"
        else:
            text = self.reply_text(body, messages)
            stop_reason = "end_turn"
            if count_tokens(text) > max_tokens:
                text, stop_reason = " ".join(text.split()[:max_tokens]), "max_tokens"
            content = [{"type": "text", "text": text}]
        system = body.get("system")
        input_tokens = count_tokens(text_of(system) if isinstance(system, list) else system or "")
        input_tokens += sum(count_tokens(text_of(m.get("content"))) for m in messages)
        return JSONResponse(
            {
                "id": f"msg_fake{self.next_id()}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": count_tokens(text)},
            }
        )

    async def _models(self, request: Request, body: Any) -> Response:
        names = ["claude-test-model", "claude-test-model-large"]
        return JSONResponse(
            {
                "data": [
                    {
                        "type": "model",
                        "id": name,
                        "display_name": name,
                        "created_at": "2025-01-01T00:00:00Z",
                    }
                    for name in names
                ],
                "has_more": False,
                "first_id": names[0],
                "last_id": names[-1],
            }
        )


_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def _forced_tool(tools: Any, choice: Any) -> tuple[dict[str, Any] | None, str | None]:
    """The tool ``tool_choice`` forces (``{"type": "tool", "name": …}``), or None; or why
    the API would refuse the tools. Other choices (auto, any, none) force nothing here."""
    if tools is None:
        if choice is not None:
            return None, "tool_choice: may only be specified while providing tools"
        return None, None
    if not isinstance(tools, list):
        return None, "tools: Input should be a valid list"
    by_name: dict[str, dict[str, Any]] = {}
    for index, tool in enumerate(tools):
        name = tool.get("name") if isinstance(tool, dict) else None
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            pattern = _TOOL_NAME.pattern
            return None, f"tools.{index}.name: String should match pattern '{pattern}'"
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            return None, f"tools.{index}.input_schema.type: Input should be 'object'"
        by_name[name] = tool
    if isinstance(choice, dict) and choice.get("type") == "tool":
        forced = by_name.get(str(choice.get("name")))
        if forced is None:
            return None, f"tool_choice: tool '{choice.get('name')}' not found in tools"
        return forced, None
    return None, None


if __name__ == "__main__":
    serve_from_command_line(FakeAnthropic)
