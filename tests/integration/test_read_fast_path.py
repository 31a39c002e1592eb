"""The most frequent reads (``GET /workflows``, a status read) answer plainly well-formed
requests on a fast path (``api/fast_path.py``) and leave every other request to FastAPI:
both give the same answer, byte for byte, and every refusal is FastAPI's own, in the
order its dependencies run (input check, then authentication, then the parameters)."""

from __future__ import annotations

import time
from typing import Any

import httpx
from fastapi import APIRouter, Request
from psycopg.types.json import Jsonb

from llm_orchestrator.api.app import OrchestratorApp, create_app, fixed_runtime
from llm_orchestrator.api.fast_path import FastPathRoute, fast_path, plain_query
from llm_orchestrator.server import LocalServer
from tests.integration.conftest import Session
from tests.integration.metrics_support import scrape, value
from tests.support import stored_execution

WORKFLOW = {
    "name": "fast-path",
    "steps": [
        {
            "id": "s",
            "type": "llm",
            "provider": "openai",
            "model": "gpt-4",
            "prompt": "hi ✓",
            "output": ["o"],
        }
    ],
}


def _same(plain: httpx.Response, by_fastapi: httpx.Response) -> None:
    assert plain.status_code == by_fastapi.status_code == 200
    assert plain.content == by_fastapi.content
    for header in ("content-type", "content-length"):
        assert plain.headers[header] == by_fastapi.headers[header]


async def test_a_plain_list_and_fastapis_answer_are_the_same(
    client: httpx.AsyncClient, admin: Session
) -> None:
    for n in range(3):
        created = await client.post(
            "/workflows", headers=admin.headers, json={**WORKFLOW, "name": f"fast-{n}"}
        )
        assert created.status_code == 201, created.text

    for query in ("", "?limit=2", "?offset=1&name=FAST", "?version=1.0&limit=100", "?offset=9"):
        plain = await client.get(f"/workflows{query}", headers=admin.headers)
        # A parameter given twice is not plain: FastAPI answers (the last value wins).
        repeated = "&".join(filter(None, [query.lstrip("?"), "limit=7"]))
        limit = dict(p.split("=") for p in query.lstrip("?").split("&") if p).get("limit", "20")
        by_fastapi = await client.get(f"/workflows?{repeated}&limit={limit}", headers=admin.headers)
        _same(plain, by_fastapi)
    assert (await client.get("/workflows?name=fast-1", headers=admin.headers)).json()["total"] == 1


async def test_a_plain_status_read_and_fastapis_answer_are_the_same(
    client: httpx.AsyncClient, admin: Session, server: LocalServer
) -> None:
    execution_id = await stored_execution(
        server.runtime, admin.user_id, WORKFLOW, timeout_seconds=60
    )
    async with server.runtime.db.connection() as conn:
        cur = await conn.execute(
            "SELECT workflow_id FROM executions WHERE id = %s", (execution_id,)
        )
        workflow_id = (await cur.fetchone())["workflow_id"]
    path = f"/workflows/{workflow_id}/status"

    plain = await client.get(f"{path}?executionId={execution_id}", headers=admin.headers)
    by_fastapi = await client.get(
        f"{path}?executionId=other&executionId={execution_id}", headers=admin.headers
    )

    _same(plain, by_fastapi)
    assert plain.json()["id"] == execution_id
    missing = await client.get(f"{path}?executionId=exec-missing", headers=admin.headers)
    assert missing.status_code == 404


async def test_refusals_come_in_fastapis_order(client: httpx.AsyncClient, admin: Session) -> None:
    # A value PostgreSQL cannot store: refused before authentication, on either path.
    for query in ("?name=a%00b", "?name=a%00b&limit=0"):
        refused = await client.get(f"/workflows{query}")
        assert refused.status_code == 400, refused.text
        assert refused.json()["details"]["errors"][0]["field"] == "name"
    # A parameter FastAPI would refuse: authentication first, then the parameter.
    for query in ("?limit=0", "?limit=abc", "?offset=-1", "?limit=" + "9" * 30):
        assert (await client.get(f"/workflows{query}")).status_code == 401
        refused = await client.get(f"/workflows{query}", headers=admin.headers)
        assert refused.status_code == 400, refused.text
        assert refused.json()["code"] == "validation_error"
    status = "/workflows/00000000-0000-0000-0000-000000000000/status"
    assert (await client.get(f"{status}?wait=99")).status_code == 401
    for query in ("?wait=99", "", "?executionId=", "?executionId=e&wait=x"):
        refused = await client.get(f"{status}{query}", headers=admin.headers)
        assert refused.status_code == 400, refused.text


# -- the front: plain reads answered ahead of the middleware stack and the router ---------
# A plain request with a ``Content-Length: 0`` header is declined by the front (a body is
# the stack's to bound) and takes the same fast path inside the stack; a repeated parameter
# makes it FastAPI's. The three answers must not differ in anything but the rate limit's
# remaining count, which each request lowers by one.

STACK = {"Content-Length": "0"}


def _alike(*answers: httpx.Response) -> None:
    first = answers[0]
    for other in answers[1:]:
        assert other.status_code == first.status_code
        assert other.content == first.content
        assert _headers(other) == _headers(first)
    remaining = [a.headers.get("x-ratelimit-remaining") for a in answers]
    resets = [a.headers.get("x-ratelimit-reset") for a in answers]
    if remaining[0] is None:
        assert remaining == resets == [None] * len(answers)
    elif len(set(resets)) == 1:  # one window: each answer counted one more
        assert [int(r) for r in remaining] == [int(remaining[0]) - n for n in range(len(answers))]
    else:  # a window closed between two of them: only later windows follow
        assert [int(r) for r in resets] == sorted(int(r) for r in resets)
        assert 0 <= time.time() - int(resets[0]) < 10  # and it closed just now


_COUNTED = ("x-ratelimit-remaining", "x-ratelimit-reset")
"""Headers that change from one request to the next: the count, and the window's end when
a window closes between two requests."""


def _headers(response: httpx.Response) -> list[tuple[str, str]]:
    return [(k, v) for k, v in response.headers.multi_items() if k not in _COUNTED]


async def test_the_front_answers_like_the_stack_and_fastapi_headers_included(
    client: httpx.AsyncClient, admin: Session, server: LocalServer
) -> None:
    created = await client.post("/workflows", headers=admin.headers, json=WORKFLOW)
    assert created.status_code == 201, created.text
    execution_id = await stored_execution(
        server.runtime, admin.user_id, WORKFLOW, timeout_seconds=60
    )
    async with server.runtime.db.connection() as conn:
        cur = await conn.execute(
            "SELECT workflow_id FROM executions WHERE id = %s", (execution_id,)
        )
        workflow_id = (await cur.fetchone())["workflow_id"]
    headers = {**admin.headers, "X-Request-ID": "req-same"}
    status = f"/workflows/{workflow_id}/status"

    for path, query, repeated in (
        ("/workflows", "?limit=5", "?limit=3&limit=5"),
        (status, f"?executionId={execution_id}", f"?executionId=x&executionId={execution_id}"),
    ):
        front = await client.get(path + query, headers=headers)
        stack = await client.get(path + query, headers={**headers, **STACK})
        by_fastapi = await client.get(path + repeated, headers=headers)
        assert front.status_code == 200, front.text
        assert front.headers["x-request-id"] == "req-same"
        _alike(front, stack, by_fastapi)


async def test_the_fronts_refusals_are_the_stacks_envelopes(
    client: httpx.AsyncClient, admin: Session
) -> None:
    key = await client.post(
        "/auth/keys",
        headers=admin.headers,
        json={"name": "no-reads", "scopes": ["execution:read"]},
    )
    assert key.status_code == 201, key.text
    missing = "/workflows/00000000-0000-0000-0000-000000000000/status?executionId=exec-none"
    cases = [
        ("/workflows", {}, 401, "unauthorized"),
        ("/workflows", {"Authorization": "Bearer not-a-token"}, 401, "unauthorized"),
        ("/workflows", {"Authorization": "Basic abc"}, 401, "unauthorized"),
        ("/workflows", {"X-API-Key": "llo_sk_unknown"}, 401, "unauthorized"),
        ("/workflows", {"X-API-Key": key.json()["key"]}, 403, "forbidden"),
        (missing, admin.headers, 404, "not_found"),
    ]
    for path, credentials, code, error in cases:
        headers = {**credentials, "X-Request-ID": f"req-{code}"}
        front = await client.get(path, headers=headers)
        stack = await client.get(path, headers={**headers, **STACK})
        assert front.status_code == code, front.text
        body = front.json()
        assert set(body) == {"code", "message", "details", "request_id"}
        assert body["code"] == error and body["request_id"] == f"req-{code}"
        assert "x-ratelimit-limit" in front.headers
        _alike(front, stack)
    assert (await client.get("/workflows")).headers["www-authenticate"].startswith("Bearer")


async def test_the_front_refuses_over_the_rate_limit_like_the_stack(
    client: httpx.AsyncClient, create_user: Any
) -> None:
    free = await create_user("front-free", tier="free")
    answers = [await client.get("/workflows", headers=free.headers) for _ in range(60)]
    assert all(a.status_code == 200 for a in answers)
    headers = {**free.headers, "X-Request-ID": "req-429"}

    front = await client.get("/workflows", headers=headers)
    stack = await client.get("/workflows", headers={**headers, **STACK})

    assert front.status_code == 429, front.text
    assert front.json()["code"] == "rate_limited"
    assert int(front.headers["retry-after"]) >= 1
    assert front.headers["x-ratelimit-remaining"] == "0"
    assert front.content == stack.content
    assert list(front.headers.multi_items()) == list(stack.headers.multi_items())


async def test_the_front_counts_its_requests_by_route_template(
    client: httpx.AsyncClient, admin: Session
) -> None:
    for _ in range(3):
        assert (await client.get("/workflows", headers=admin.headers)).status_code == 200
    assert (await client.get("/workflows")).status_code == 401
    status = "/workflows/00000000-0000-0000-0000-000000000000/status?executionId=exec-none"
    assert (await client.get(status, headers=admin.headers)).status_code == 404

    requests = (await scrape(client))["orchestrator_http_requests"]

    sample = "orchestrator_http_requests_total"
    assert value(requests, sample, route="/api/v1/workflows", status="200") == 3
    assert value(requests, sample, route="/api/v1/workflows", status="401") == 1
    route = "/api/v1/workflows/{workflow_id}/status"
    assert value(requests, sample, route=route, status="404") == 1


async def test_the_front_takes_plain_gets_of_hot_routes_only(server: LocalServer) -> None:
    app = server.app
    assert isinstance(app, OrchestratorApp) and app.hot_reads is not None
    status = "/api/v1/workflows/w-1/status"
    taken = [
        ("GET", "/api/v1/workflows", b"", []),
        ("GET", "/api/v1/workflows", b"limit=3&name=x", []),
        ("GET", status, b"executionId=e-1", []),
        ("GET", status, b"executionId=e-1&wait=2", []),
    ]
    declined = [
        ("HEAD", "/api/v1/workflows", b"", []),
        ("POST", "/api/v1/workflows", b"", []),
        ("GET", "/api/v1/workflows/", b"", []),
        ("GET", "/api/v1/workflows/w-1", b"", []),
        ("GET", "/api/v1/workflows/w-1/status/", b"executionId=e-1", []),
        ("GET", "/api/v1/workflows", b"limit=0", []),
        ("GET", "/api/v1/workflows", b"limit=3&limit=3", []),
        ("GET", "/api/v1/workflows", b"other=1", []),
        ("GET", status, b"", []),
        ("GET", status, b"executionId=e-1&wait=26", []),
        ("GET", "/api/v1/workflows", b"", [(b"content-length", b"0")]),
        ("GET", "/api/v1/workflows", b"", [(b"transfer-encoding", b"chunked")]),
    ]
    for method, path, query, headers in taken + declined:
        sent: list[Any] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Any, sent: list[Any] = sent) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "root_path": "",
            "query_string": query,
            "headers": headers,
            "client": ("203.0.113.7", 4242),
            "server": ("test", 80),
            "scheme": "http",
        }
        answered = await app.hot_reads.answer(app, scope, receive, send)
        expected = (method, path, query, headers) in taken
        assert answered is expected, (method, path, query, headers)
        # Taken or not, unauthenticated: only the front's own 401 may have been sent.
        assert [m["status"] for m in sent if m["type"] == "http.response.start"] == (
            [401] if expected else []
        )
    root_scope = {"type": "http", "method": "GET", "path": "/x/api/v1/workflows"}
    root_scope |= {"root_path": "/x", "query_string": b"", "headers": []}

    async def never(*_: Any) -> Any:
        raise AssertionError("a declined request is not touched")

    assert await app.hot_reads.answer(app, root_scope, never, never) is False


async def test_an_unexpected_error_on_the_front_is_a_500_envelope_and_counted(
    server: LocalServer,
) -> None:
    hot = APIRouter(route_class=FastPathRoute)

    async def explode(request: Request, query: dict[str, str]) -> Any:
        raise RuntimeError("secret internal detail")

    @hot.get("/hot", response_model=dict[str, str])
    @fast_path(lambda request: plain_query(request, ()), explode)
    async def hot_route() -> dict[str, str]:
        return {}

    app = create_app([hot], fixed_runtime(server.runtime))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t/api/v1") as http:
        front = await http.get("/hot", headers={"X-Request-ID": "r-500"})
        stack = await http.get("/hot", headers={"X-Request-ID": "r-500", **STACK})

    assert front.status_code == 500
    assert front.json() == {
        "code": "internal_error",
        "message": "Internal server error",
        "details": {},
        "request_id": "r-500",
    }
    assert "secret" not in front.text
    _alike(front, stack)
    assert app.state.http_metrics.counts() == {("/api/v1/hot", 500): 2}


# -- the bodies the fast path writes itself (``api/schemas/plain_json.py``) -----------------
# The front builds these JSON bodies without the response models; FastAPI (a repeated
# parameter) serialises the models. Every shape a body can take must come out the same.

FIVE_STEPS = {
    "name": "shapes",
    "steps": [
        {
            "id": step_id,
            "type": "llm",
            "provider": "openai",
            "model": "gpt-4",
            "prompt": "hi",
            "output": [f"o_{step_id}"],
        }
        for step_id in ("done", "broke", "busy", "bare", "waiting")
    ],
}
CALLS = [
    # A whole-number latency (a float field: 12.0), a price, a failed attempt without usage.
    {
        "provider": "openai",
        "model": "gpt-4",
        "outcome": "succeeded",
        "latency_ms": 12,
        "input_tokens": 3,
        "output_tokens": 5,
        "cost_usd": 0.000123,
    },
    {
        "provider": "openai",
        "model": "gpt-4",
        "outcome": "ProviderUnavailable",
        "latency_ms": 1.5,
        "input_tokens": None,
        "output_tokens": None,
        "cost_usd": None,
    },
]
UNPRICED = [{**CALLS[0], "model": "unknown ✓", "cost_usd": None, "latency_ms": 0.1}]
ODD_TEXT = 'é ✓ 😀 "quoted" \\ back\tslash \u2028 \u001f </script>'


async def test_the_status_bodies_the_front_writes_are_fastapis_in_every_shape(
    client: httpx.AsyncClient, admin: Session, server: LocalServer
) -> None:
    execution_id = await stored_execution(
        server.runtime, admin.user_id, FIVE_STEPS, timeout_seconds=60
    )
    runs = [
        ("done", "completed", {"o_done": {"t": ODD_TEXT, "n": 1.0, "big": 10**20}}, None, CALLS),
        ("broke", "failed", None, {"type": "ProviderError", "message": ODD_TEXT}, UNPRICED),
        ("busy", "running", None, None, None),
        ("bare", "failed", {"o_bare": 1}, None, []),
    ]
    async with server.runtime.db.connection() as conn:
        cur = await conn.execute(
            "SELECT workflow_id FROM executions WHERE id = %s", (execution_id,)
        )
        workflow_id = (await cur.fetchone())["workflow_id"]
        for n, (step_id, status, outputs, error, calls) in enumerate(runs):
            await conn.execute(
                "INSERT INTO step_runs (execution_id, step_id, step_type, provider, status,"
                " outputs, error, attempts, input_tokens, output_tokens, latency_ms, calls)"
                " VALUES (%s, %s, 'llm', 'openai', %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    execution_id,
                    step_id,
                    status,
                    Jsonb(outputs) if outputs is not None else None,
                    Jsonb(error) if error is not None else None,
                    n,
                    None if n == 2 else 3,
                    None if n == 2 else 5,
                    None if n == 2 else [20.0, 0.25, None, 7.5][n],
                    Jsonb(calls) if calls is not None else None,
                ),
            )
        await conn.execute(
            "UPDATE executions SET inputs = %s WHERE id = %s",
            (Jsonb({"x": ODD_TEXT, "f": 2.5, "none": None, "list": [1, "ü"]}), execution_id),
        )
    path = f"/workflows/{workflow_id}/status"

    async def same_both_ways() -> dict[str, Any]:
        plain = await client.get(f"{path}?executionId={execution_id}", headers=admin.headers)
        by_fastapi = await client.get(
            f"{path}?executionId=x&executionId={execution_id}", headers=admin.headers
        )
        _same(plain, by_fastapi)
        body: dict[str, Any] = plain.json()
        return body

    pending = await same_both_ways()
    assert [s["status"] for s in pending["steps"].values()] == [
        "completed",
        "failed",
        "running",
        "failed",
        "pending",
    ]
    assert pending["steps"]["busy"]["usage"] is None and "error" not in pending
    assert pending["steps"]["broke"]["usage"]["cost_usd"] is None
    assert (
        b'"latency_ms":12.0'
        in (await client.get(f"{path}?executionId={execution_id}", headers=admin.headers)).content
    )

    # A running execution's error is not shown; an ended one's is.
    error = {"type": "StepFailed", "message": ODD_TEXT, "step_id": "broke"}
    async with server.runtime.db.connection() as conn:
        await conn.execute(
            "UPDATE executions SET status = 'running', error = %s WHERE id = %s",
            (Jsonb(error), execution_id),
        )
    assert "error" not in await same_both_ways()
    async with server.runtime.db.connection() as conn:
        await conn.execute(
            "UPDATE executions SET status = 'failed', completed_at = now() WHERE id = %s",
            (execution_id,),
        )
    ended = await same_both_ways()
    assert ended["error"] == error and ended["completed_at"] is not None


async def test_the_list_bodies_the_front_writes_are_fastapis_at_every_page_edge(
    client: httpx.AsyncClient, admin: Session
) -> None:
    for n, description in enumerate((ODD_TEXT, None, "")):
        body: dict[str, Any] = {**WORKFLOW, "name": f"wörk ✓ {n}", "version": f"{n}.0"}
        if description is not None:
            body["description"] = description
        created = await client.post("/workflows", headers=admin.headers, json=body)
        assert created.status_code == 201, created.text
    total = (await client.get("/workflows", headers=admin.headers)).json()["total"]
    assert total >= 3

    for query in (
        "limit=1",
        "limit=1&offset=1",
        f"offset={total - 1}",
        f"offset={total}",
        "offset=10000",
        "name=w%C3%B6rk",
        "name=nothing-matches",
        "version=2.0&limit=100",
    ):
        plain = await client.get(f"/workflows?{query}", headers=admin.headers)
        by_fastapi = await client.get(
            f"/workflows?{query}&offset=0&"
            + (f"offset={dict(p.split('=') for p in query.split('&')).get('offset', '0')}"),
            headers=admin.headers,
        )
        _same(plain, by_fastapi)
    page = (await client.get("/workflows?name=w%C3%B6rk", headers=admin.headers)).json()
    assert {w["description"] for w in page["workflows"]} == {ODD_TEXT, None, ""}
