"""Strict input: JSON types as declared, JSON bodies in UTF-8, and even a request uvicorn
cannot parse answered in the envelope."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from llm_orchestrator.api.app import create_app
from llm_orchestrator.server import all_routers
from tests.integration.serve_support import threaded_server


def _error_fields(response) -> list[str]:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    return [e["field"] for e in body["details"]["errors"]]


@pytest.mark.parametrize(
    "field, value",
    [("expires_in_days", "1"), ("expires_in_days", 1.5), ("name", 7), ("scopes", "admin")],
)
async def test_request_fields_take_their_json_type_only(client, admin, field, value):
    body = {"name": "ci", "scopes": ["admin"], field: value}
    response = await client.post("/auth/keys", headers=admin.headers, json=body)
    assert _error_fields(response) == [field]


async def test_a_whole_number_spelled_with_a_fraction_is_an_integer(client, admin):
    created = await client.post(
        "/auth/keys",
        headers=admin.headers,
        json={"name": "ci", "scopes": ["admin"]} | {"expires_in_days": 30.0},
    )
    workflow = await client.post(
        "/workflows",
        headers=admin.headers,
        json={
            "name": "whole",
            "timeout_seconds": 60.0,
            "steps": [
                {"id": "a", "type": "llm", "provider": "openai", "model": "m", "prompt": "p"}
                | {"max_tokens": 100.0, "retry": {"max_attempts": 2.0}},
            ],
        },
    )

    assert created.status_code == 201, created.text
    assert workflow.status_code == 201, workflow.text
    assert workflow.json()["timeout_seconds"] == 60
    assert workflow.json()["steps"][0]["max_tokens"] == 100
    assert workflow.json()["steps"][0]["retry"]["max_attempts"] == 2


async def test_a_number_where_a_string_belongs_is_refused_at_login(client):
    response = await client.post("/auth/login", json={"username": 12, "password": "x"})
    assert _error_fields(response) == ["username"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
async def test_json_bodies_must_be_utf8(client, encoding):
    body = json.dumps({"username": "admin", "password": "whatever"}).encode(encoding)
    response = await client.post(
        "/auth/login", content=body, headers={"Content-Type": "application/json"}
    )
    assert _error_fields(response) == ["body"]
    assert "UTF-8" in response.json()["details"]["errors"][0]["message"]


async def test_a_charset_other_than_utf8_is_refused(client):
    body = json.dumps({"username": "admin", "password": "whatever"}).encode()
    response = await client.post(
        "/auth/login", content=body, headers={"Content-Type": "application/json; charset=latin-1"}
    )
    assert _error_fields(response) == ["body"]


async def test_utf8_with_an_explicit_charset_is_fine(client):
    body = json.dumps({"username": "admin", "password": "wrong-password"}).encode()
    response = await client.post(
        "/auth/login", content=body, headers={"Content-Type": "application/json; charset=UTF-8"}
    )
    assert response.status_code == 401


@pytest.fixture
def raw_server() -> Iterator[int]:
    """The app behind uvicorn with the protocol ``llmo serve`` uses; no request here gets
    as far as the runtime."""

    async def no_runtime():  # pragma: no cover - never reached by these requests
        raise AssertionError("the runtime is not needed")

    with threaded_server(create_app(all_routers(), no_runtime)) as port:
        yield port


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_raw_0xff_in_the_request_line_is_answered_in_the_envelope(raw_server):
    answer = _raw(raw_server, b"GET /api/v1/health/live\xff HTTP/1.1\r\nHost: x\r\n\r\n")

    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    assert status_line.startswith("HTTP/1.1 400")
    assert headers["content-type"] == "application/json"
    envelope = json.loads(body)
    assert envelope["code"] == "validation_error"
    assert envelope["request_id"] == headers["x-request-id"]
    assert set(envelope) == {"code", "message", "details", "request_id"}
