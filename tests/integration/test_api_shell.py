"""The envelope, request ids, pagination and routing that every group shares."""

from __future__ import annotations

import httpx
import pytest
from fastapi import APIRouter

from llm_orchestrator.api.app import create_app, fixed_runtime


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message", "details", "request_id"}
    assert body["code"] == code
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body


async def test_every_response_carries_a_generated_request_id(client):
    response = await client.get("/health/live")
    assert response.headers["X-Request-ID"].startswith("req-")


async def test_a_clients_request_id_is_echoed(client):
    response = await client.get("/health/live", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"


async def test_a_hostile_request_id_is_replaced(client):
    response = await client.get("/health/live", headers={"X-Request-ID": "a b<script>"})
    assert response.headers["X-Request-ID"].startswith("req-")


async def test_unknown_route_is_404_not_found(client):
    assert_envelope(await client.get("/no/such/route"), 404, "not_found")


async def test_wrong_method_is_405_in_the_envelope(client):
    assert_envelope(await client.delete("/health/live"), 405, "validation_error")


async def test_malformed_json_is_400(client, admin):
    response = await client.post(
        "/admin/users",
        headers={**admin.headers, "Content-Type": "application/json"},
        content=b'{"username": ',
    )
    body = assert_envelope(response, 400, "validation_error")
    assert body["details"]["errors"][0]["field"] == "body"
    assert body["details"]["errors"][0]["message"].startswith("Malformed JSON")


async def test_missing_body_is_400(client, admin):
    response = await client.post("/admin/users", headers=admin.headers)
    body = assert_envelope(response, 400, "validation_error")
    assert body["details"]["errors"] == [
        {"field": "body", "message": "A JSON request body is required"}
    ]


async def test_unknown_fields_are_rejected(client):
    response = await client.post(
        "/auth/login", json={"username": "a", "password": "b", "remember_me": True}
    )
    body = assert_envelope(response, 400, "validation_error")
    assert body["details"]["errors"][0]["field"] == "remember_me"


LIST_ENDPOINTS = [
    "/auth/keys",
    "/workflows",
    "/admin/users",
    "/audit/events",
    "/state/wf-00000000-0000-0000-0000-000000000000/checkpoints?executionId=exec-x",
]


@pytest.mark.parametrize("path", LIST_ENDPOINTS)
async def test_bad_pagination_is_400_on_every_list_endpoint(client, admin, path):
    separator = "&" if "?" in path else "?"
    for query, field in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("offset=-1", "offset"),
        ("limit=abc", "limit"),
    ]:
        response = await client.get(f"{path}{separator}{query}", headers=admin.headers)
        body = assert_envelope(response, 400, "validation_error")
        assert body["details"]["errors"][0]["field"] == field, query
    if "?" not in path:  # the bounds themselves are fine
        for limit in (1, 100):
            response = await client.get(f"{path}?limit={limit}", headers=admin.headers)
            assert response.status_code == 200, response.text
            assert response.json()["limit"] == limit


async def test_unexpected_errors_are_500_without_internals(server):
    boom = APIRouter()

    @boom.get("/boom")
    async def explode() -> None:
        raise RuntimeError("secret internal detail")

    app = create_app([boom], fixed_runtime(server.runtime))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t/api/v1") as http:
        response = await http.get("/boom", headers={"X-Request-ID": "r-500"})

    body = assert_envelope(response, 500, "internal_error")
    assert "secret" not in response.text
    assert body["request_id"] == "r-500"


async def test_readiness_checks_the_database(client):
    response = await client.get("/health/ready")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["checks"]["database"]["status"] == "healthy"
    assert "redis" not in body["checks"]


async def test_health_is_503_when_the_database_is_down(settings):
    from llm_orchestrator.runtime import build_runtime

    runtime = build_runtime(
        settings, database_url="postgresql://nobody@127.0.0.1:1/none?connect_timeout=1"
    )
    from llm_orchestrator.api.routers import all_routers

    app = create_app(all_routers(), fixed_runtime(runtime))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t/api/v1"
    ) as http:
        response = await http.get("/health")
        ready = await http.get("/health/ready")
        live = await http.get("/health/live")

    for probe in (response, ready):
        assert probe.status_code == 503
        assert probe.json()["status"] == "unhealthy"
        assert probe.json()["checks"]["database"]["status"] == "unhealthy"
    assert live.status_code == 200
