"""Input that a fuzzer (or an attacker) sends: values at the edges of what PostgreSQL can
store. Each gets a 400 in the envelope naming the field, never a 500, and writes nothing."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from llm_orchestrator.api.pagination import MAX_OFFSET
from llm_orchestrator.api.storable import MAX_REPORTED, unstorable_values
from llm_orchestrator.errors import ValidationFailed
from llm_orchestrator.server import LocalServer
from tests.integration.conftest import Session

STEP = {
    "id": "summary",
    "type": "llm",
    "provider": "openai",
    "model": "gpt-4o-mini",
    "prompt": "Summarise: {{text}}",
    "output": ["summary"],
}
LIST_PATHS = ["/workflows", "/auth/keys", "/admin/users", "/audit/events"]


def workflow(**extra: Any) -> dict[str, Any]:
    return {"name": "hostile", "steps": [dict(STEP)], **extra}


async def create_workflow(client: httpx.AsyncClient, admin: Session) -> str:
    response = await client.post("/workflows", headers=admin.headers, json=workflow())
    assert response.status_code == 201, response.text
    workflow_id: str = response.json()["id"]
    return workflow_id


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"code", "message", "details", "request_id"}
    assert body["code"] == code
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body


def field_errors(response: httpx.Response) -> list[dict[str, str]]:
    body = assert_envelope(response, 400, "validation_error")
    errors: list[dict[str, str]] = body["details"]["errors"]
    return errors


async def audited_actions(client: httpx.AsyncClient, admin: Session, event_type: str) -> list:
    response = await client.get(
        "/audit/events", headers=admin.headers, params={"event_type": event_type, "limit": 100}
    )
    assert response.status_code == 200, response.text
    return [event["action"] for event in response.json()["events"]]


# -- pagination: OFFSET is a bigint -----------------------------------------------------------


@pytest.mark.parametrize("path", LIST_PATHS)
async def test_offset_beyond_bigint_is_400_naming_it(
    client: httpx.AsyncClient, admin: Session, path: str
) -> None:
    for offset in ("9223372036854775808", "99999999999999999999"):
        response = await client.get(path, headers=admin.headers, params={"offset": offset})
        assert [e["field"] for e in field_errors(response)] == ["offset"]


async def test_checkpoints_offset_beyond_bigint_is_400(
    client: httpx.AsyncClient, admin: Session
) -> None:
    workflow_id = await create_workflow(client, admin)
    response = await client.get(
        f"/state/{workflow_id}/checkpoints",
        headers=admin.headers,
        params={"executionId": "exec-x", "offset": str(MAX_OFFSET + 1)},
    )
    assert [e["field"] for e in field_errors(response)] == ["offset"]


async def test_the_largest_offset_is_an_empty_page(
    client: httpx.AsyncClient, admin: Session
) -> None:
    response = await client.get("/workflows", headers=admin.headers, params={"offset": MAX_OFFSET})
    assert response.status_code == 200, response.text
    assert response.json()["workflows"] == []


# -- NUL, lone surrogates and non-finite numbers in JSON bodies ------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (workflow(name="a\x00b"), "name"),
        (workflow(description="d\x00"), "description"),
        (workflow(steps=[{**STEP, "prompt": "Summarise\x00 {{text}}"}]), "steps[0].prompt"),
        (workflow(steps=[{**STEP, "temperature": float("nan")}]), "steps[0].temperature"),
    ],
)
async def test_unstorable_workflow_definition_is_400_and_not_created(
    client: httpx.AsyncClient, admin: Session, body: dict[str, Any], field: str
) -> None:
    # json.dumps writes NaN as a bare token, as a sloppy client would (httpx's json= refuses).
    response = await client.post(
        "/workflows",
        headers={**admin.headers, "Content-Type": "application/json"},
        content=json.dumps(body).encode(),
    )
    assert [e["field"] for e in field_errors(response)] == [field]
    listed = await client.get("/workflows", headers=admin.headers)
    assert listed.json()["total"] == 0


@pytest.mark.parametrize(
    ("raw_inputs", "field"),
    [
        ('{"text": "x\\u0000y"}', "inputs.text"),
        ('{"text": "\\udfff"}', "inputs.text"),
        ('{"text": ["ok", "\\ud800"]}', "inputs.text[1]"),
        ('{"text": NaN}', "inputs.text"),
        ('{"text": -Infinity}', "inputs.text"),
        ('{"text": 1e400}', "inputs.text"),
        ('{"text": {"nested": {"deeper": "\\u0000"}}}', "inputs.text.nested.deeper"),
        ('{"text": "x", "k\\u0000": 1}', "inputs"),
    ],
)
async def test_unstorable_execution_inputs_are_400_and_start_nothing(
    client: httpx.AsyncClient, admin: Session, raw_inputs: str, field: str
) -> None:
    workflow_id = await create_workflow(client, admin)
    response = await client.post(
        f"/workflows/{workflow_id}/execute",
        headers={**admin.headers, "Content-Type": "application/json"},
        content=f'{{"inputs": {raw_inputs}}}'.encode(),
    )
    assert [e["field"] for e in field_errors(response)] == [field]
    assert "start" not in await audited_actions(client, admin, "workflow_execution")


async def test_nul_in_login_username_is_400_not_500(client: httpx.AsyncClient) -> None:
    response = await client.post("/auth/login", json={"username": "ad\x00min", "password": "x"})
    assert [e["field"] for e in field_errors(response)] == ["username"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "k\x00", "scopes": ["workflow:read"]}, "name"),
        ({"name": "k", "scopes": ["workflow:read"], "user_id": "u\x00"}, "user_id"),
    ],
)
async def test_nul_in_api_key_request_is_400_and_creates_no_key(
    client: httpx.AsyncClient, admin: Session, body: dict[str, Any], field: str
) -> None:
    response = await client.post("/auth/keys", headers=admin.headers, json=body)
    assert [e["field"] for e in field_errors(response)] == [field]
    assert (await client.get("/auth/keys", headers=admin.headers)).json()["total"] == 0


async def test_nul_in_checkpoint_and_restore_bodies_is_400(
    client: httpx.AsyncClient, admin: Session
) -> None:
    workflow_id = await create_workflow(client, admin)
    checkpoint = await client.post(
        f"/state/{workflow_id}/checkpoints", headers=admin.headers, json={"executionId": "e\x00"}
    )
    assert [e["field"] for e in field_errors(checkpoint)] == ["executionId"]
    restore = await client.post(
        f"/state/{workflow_id}/restore", headers=admin.headers, json={"checkpointId": "c\x00"}
    )
    assert [e["field"] for e in field_errors(restore)] == ["checkpointId"]


async def test_escaped_surrogate_pairs_and_big_finite_numbers_are_accepted(
    client: httpx.AsyncClient, admin: Session
) -> None:
    # A well-formed pair is one character (U+1F600), not a lone surrogate.
    response = await client.post(
        "/workflows",
        headers={**admin.headers, "Content-Type": "application/json"},
        content=(
            b'{"name": "smile \\ud83d\\ude00", "description": "1e308 is finite",'
            b' "steps": [{"id": "s", "type": "llm", "provider": "openai", "model": "m",'
            b' "prompt": "p", "output": ["o"], "temperature": 1.0}]}'
        ),
    )
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "smile \U0001f600"


# -- NUL in query and path parameters ---------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/audit/events", {"user_id": "u\x00"}, "user_id"),
        ("/audit/events", {"event_type": "x", "resource_id": "\x00"}, "resource_id"),
        ("/workflows", {"name": "a\x00"}, "name"),
        ("/workflows", {"version": "\x00"}, "version"),
    ],
)
async def test_nul_in_a_query_parameter_is_400_naming_it(
    client: httpx.AsyncClient, admin: Session, path: str, params: dict[str, str], field: str
) -> None:
    response = await client.get(path, headers=admin.headers, params=params)
    assert [e["field"] for e in field_errors(response)] == [field]


async def test_nul_in_execution_id_is_400(client: httpx.AsyncClient, admin: Session) -> None:
    workflow_id = await create_workflow(client, admin)
    for method, path in [
        ("GET", f"/workflows/{workflow_id}/status"),
        ("POST", f"/workflows/{workflow_id}/pause"),
        ("GET", f"/state/{workflow_id}"),
    ]:
        response = await client.request(
            method, path, headers=admin.headers, params={"executionId": "exec-\x00"}
        )
        assert [e["field"] for e in field_errors(response)] == ["executionId"], path


async def test_nul_in_a_path_id_is_400_naming_it(client: httpx.AsyncClient, admin: Session) -> None:
    response = await client.get("/audit/events/evt-%00", headers=admin.headers)
    assert [e["field"] for e in field_errors(response)] == ["event_id"]


# -- the walk itself, and the database's own net ----------------------------------------------


def test_deeply_nested_values_are_walked_without_recursion() -> None:
    value: Any = "\x00"
    for _ in range(5_000):  # far past the interpreter's recursion limit
        value = [value]
    [error] = unstorable_values(value, "inputs")
    assert error.field == "inputs" + "[0]" * 5_000


def test_a_flood_of_bad_values_reports_a_bounded_number() -> None:
    errors = unstorable_values({"inputs": ["\x00"] * 10_000})
    assert len(errors) == MAX_REPORTED
    assert errors[0].field == "inputs[0]"


async def test_a_value_the_database_refuses_is_a_validation_error(server: LocalServer) -> None:
    # The net under the API's checks: whatever a check misses is a 400, not a 500.
    for query, value, reason in [
        ("SELECT %s::integer", 2**40, "out of range"),
        ("SELECT %s::text", "a\x00b", "NUL"),
    ]:
        with pytest.raises(ValidationFailed, match=reason):
            async with server.runtime.db.connection() as conn:
                await conn.execute(query, (value,))


# -- 405: Allow lists every method the path has -----------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("OPTIONS", "/auth/keys", "GET, POST"),
        ("PATCH", "/workflows/wf-1", "DELETE, GET, PUT"),
        ("PUT", "/state/wf-1/checkpoints", "GET, POST"),
    ],
)
async def test_405_allow_lists_every_method_of_the_path(
    client: httpx.AsyncClient, admin: Session, method: str, path: str, allowed: str
) -> None:
    response = await client.request(method, path, headers=admin.headers)
    assert_envelope(response, 405, "validation_error")
    assert response.headers["Allow"] == allowed


async def test_a_body_over_the_limit_is_413_in_the_envelope(server):
    import httpx as _httpx

    from llm_orchestrator.api.app import create_app, fixed_runtime
    from llm_orchestrator.api.routers import all_routers

    app = create_app(all_routers(), fixed_runtime(server.runtime), max_body_bytes=1024)
    transport = _httpx.ASGITransport(app=app)
    async with _httpx.AsyncClient(transport=transport, base_url="http://t/api/v1") as http:
        declared = await http.post(
            "/auth/login",
            content=b'{"username": "' + b"x" * 2000 + b'", "password": "p"}',
            headers={"Content-Type": "application/json"},
        )

        async def chunks():
            yield b'{"username": "'
            for _ in range(10):
                yield b"y" * 200
            yield b'", "password": "p"}'

        streamed = await http.post(
            "/auth/login", content=chunks(), headers={"Content-Type": "application/json"}
        )

    for response in (declared, streamed):
        assert response.status_code == 413
        body = response.json()
        assert body["code"] == "validation_error"
        assert body["message"] == "Request body larger than the limit of 1024 bytes"
        assert body["request_id"] == response.headers["X-Request-ID"]
