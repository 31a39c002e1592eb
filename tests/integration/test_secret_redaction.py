"""No secret value reaches a log line (library loggers included), an error message, an
audit event, execution state or a response.

Workflows run against the fake OpenAI server with marker credentials stored as secrets: a
key, and a base URL carrying ``user:password@``. Every log record of every logger, at DEBUG,
and every response body is then searched for the markers.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from llm_orchestrator.config import Settings
from llm_orchestrator.server import LocalServer, bootstrap, build_local_server
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.execution_support import create_workflow, llm_step, start_execution, wait_for
from tests.support import free_port

MARKER_KEY = f"sk-MARKERKEY{uuid.uuid4().hex[:12]}"
MARKER_PASSWORD = f"MARKERPASS{uuid.uuid4().hex[:12]}"
MARKER_USER = f"markeruser{uuid.uuid4().hex[:6]}"
# The SDK's HTTP stack logs under httpx/httpcore or, in newer SDKs, httpx2/httpcore2.
LIBRARY_LOGGERS = (
    "httpx",
    "httpcore",
    "httpx2",
    "httpcore2",
    "aiohttp",
    "openai",
    "llm_orchestrator",
)
MARKERS = (MARKER_KEY, MARKER_PASSWORD, f"{MARKER_USER}:{MARKER_PASSWORD}")


class Everything(logging.Handler):
    """Keeps every record as its handlers would print it, exception text included."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def captured() -> Iterator[Everything]:
    handler = Everything()
    root = logging.getLogger()
    libraries = [logging.getLogger(n) for n in LIBRARY_LOGGERS]
    saved = (root.level, [lib.level for lib in libraries])
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for lib in libraries:
        lib.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        for lib, level in zip(libraries, saved[1], strict=True):
            lib.setLevel(level)


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    # No key check: httpx turns the URL's user:password into Basic auth, which replaces the
    # SDK's Bearer header on the wire.
    with FakeOpenAI.start() as fake:
        yield fake


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[LocalServer]:
    local = build_local_server(settings, database_url=settings.database_url, environ={})
    await bootstrap(local.runtime)
    yield local
    await local.runtime.close()


def _url_with_credentials(port: int) -> str:
    return f"http://{MARKER_USER}:{MARKER_PASSWORD}@127.0.0.1:{port}/v1"


async def _store_secret(client: httpx.AsyncClient, headers: dict[str, str], key: str, value: str):
    response = await client.post(
        "/admin/secrets", headers=headers, json={"key": key, "value": value}
    )
    assert response.status_code == 200, response.text
    return response


async def _run(client, admin, steps: list[dict[str, Any]]) -> list[httpx.Response]:
    workflow_id = await create_workflow(client, admin, steps)
    execution_id = await start_execution(client, admin, workflow_id, {"text": "hello"})
    await wait_for(client, admin, workflow_id, execution_id)
    params = {"executionId": execution_id}
    return [
        await client.get(f"/workflows/{workflow_id}/status", headers=admin.headers, params=params),
        await client.get(f"/state/{workflow_id}/checkpoints", headers=admin.headers, params=params),
    ]


def _assert_clean(text: str, where: str) -> None:
    for marker in MARKERS:
        assert marker not in text, f"a secret reached {where}: {text[:500]}"


async def test_secrets_never_reach_logs_errors_audit_or_state(client, admin, fake_openai, captured):
    seen: list[httpx.Response] = []
    seen.append(await _store_secret(client, admin.headers, "OPENAI_API_KEY", MARKER_KEY))
    seen.append(
        await _store_secret(
            client, admin.headers, "OPENAI_BASE_URL", _url_with_credentials(fake_openai.port)
        )
    )
    step = llm_step("answer", "Say: {{text}}", "answer", retry={"max_attempts": 1})

    # A successful call: httpx logs the request URL at INFO.
    ok = await _run(client, admin, [step])
    assert ok[0].json()["status"] == "completed"
    seen += ok
    # The provider quotes the key and the URL back in its error message.
    fake_openai.fail_next(400, message=f"bad key {MARKER_KEY} at {_url_with_credentials(1)}")
    failed = await _run(client, admin, [step])
    assert failed[0].json()["status"] == "failed"
    assert "[redacted]" in failed[0].json()["error"]["message"]
    seen += failed
    # A 401, and an endpoint that refuses connections: the SDK's own error paths.
    fake_openai.fail_next(401)
    seen += await _run(client, admin, [step])
    await _store_secret(
        client, admin.headers, "OPENAI_BASE_URL", _url_with_credentials(free_port())
    )
    unreachable = await _run(client, admin, [step])
    assert unreachable[0].json()["status"] == "failed"
    seen += unreachable

    seen.append(await client.get("/audit/events?limit=100", headers=admin.headers))
    seen.append(await client.get("/admin/config", headers=admin.headers))

    for response in seen:
        _assert_clean(response.text, f"a response to {response.request.url}")
        _assert_clean(str(response.headers), "response headers")
    for line in captured.lines:
        _assert_clean(line, "a log line")
    # The test saw what it guards against: httpx's request lines, with the URL redacted.
    request_lines = [
        line for line in captured.lines if "HTTP Request" in line and "/chat/completions" in line
    ]
    assert request_lines and all("[redacted]" in line for line in request_lines)
