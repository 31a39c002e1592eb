"""A plain submit (``POST /workflows/{id}/execute`` with a JSON body FastAPI accepts,
``async`` true, no idempotency key) is answered at the app's front (``api/hot_writes.py``),
ahead of the middleware stack and the router; every other submit goes to the stack with its
body replayed. Both answer alike, byte for byte but for the new execution's id and time,
and every refusal comes in FastAPI's order: the input check, the caller, then the body."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import httpx

from llm_orchestrator.api.app import OrchestratorApp
from llm_orchestrator.server import LocalServer
from tests.integration.conftest import Session
from tests.integration.metrics_support import scrape, value

WORKFLOW = {
    "name": "front-execute",
    "steps": [
        {
            "id": "s",
            "type": "llm",
            "provider": "openai",
            "model": "gpt-4",
            "prompt": "hi {{ inputs.x }}",
            "output": ["o"],
        }
    ],
}
STACK = {"Content-Type": "application/json; charset=utf-8"}
"""A JSON body FastAPI reads as it reads a plain one, which the front leaves to the stack."""
MISSING = "00000000-0000-0000-0000-000000000000"


async def _workflow(client: httpx.AsyncClient, session: Session) -> str:
    created = await client.post("/workflows", headers=session.headers, json=WORKFLOW)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _post(client: httpx.AsyncClient, path: str, headers: dict[str, str], body: Any) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(
        path, headers={"Content-Type": "application/json", **headers}, content=content
    )


def _normalised(response: httpx.Response) -> bytes:
    """The body with the new execution's id and start time blanked out."""
    body = response.content
    if response.status_code == 202:
        answer = response.json()
        for field in ("execution_id", "started_at"):
            body = body.replace(answer[field].encode(), b"<" + field.encode() + b">")
    return body


_COUNTED = ("x-ratelimit-remaining", "x-ratelimit-reset")
"""Headers that change from one request to the next: the count, and the window's end when
a window closes between the two requests."""


def _headers(response: httpx.Response) -> list[tuple[str, str]]:
    return [(k, v) for k, v in response.headers.multi_items() if k not in _COUNTED]


def _alike(front: httpx.Response, stack: httpx.Response) -> None:
    assert front.status_code == stack.status_code, (front.text, stack.text)
    assert _normalised(front) == _normalised(stack)
    assert _headers(front) == _headers(stack)
    assert ("x-ratelimit-remaining" in front.headers) == ("x-ratelimit-remaining" in stack.headers)
    if "x-ratelimit-remaining" in front.headers:
        reset = int(front.headers["x-ratelimit-reset"])
        if int(stack.headers["x-ratelimit-reset"]) == reset:  # the same window: one more
            remaining = int(front.headers["x-ratelimit-remaining"])
            assert int(stack.headers["x-ratelimit-remaining"]) == remaining - 1
        else:  # a window closed between the two requests: the stack's is a later one
            assert _closed_just_now(reset)
            assert int(stack.headers["x-ratelimit-reset"]) > reset


def _closed_just_now(reset: int) -> bool:
    """Whether a window ending at ``reset`` (epoch seconds) ended within the last few
    seconds: a window that really closed between two requests, not a stale one."""
    return 0 <= time.time() - reset < 10


async def test_a_plain_submit_and_the_stacks_answer_are_the_same(
    client: httpx.AsyncClient, admin: Session, server: LocalServer
) -> None:
    workflow_id = await _workflow(client, admin)
    path = f"/workflows/{workflow_id}/execute"
    headers = {**admin.headers, "X-Request-ID": "req-front"}
    for body in ({"inputs": {"x": "1"}}, {"inputs": {"x": "ü"}, "async": True}, {"inputs": {}}):
        front = await _post(client, path, headers, body)
        stack = await _post(client, path, {**headers, **STACK}, body)
        assert front.status_code == 202, front.text
        assert front.headers["x-request-id"] == "req-front"
        assert re.fullmatch(r"exec-\S+", front.json()["execution_id"])
        _alike(front, stack)
    # The execution the front started is there, and its start event names the request.
    execution_id = front.json()["execution_id"]
    status = await client.get(
        f"/workflows/{workflow_id}/status?executionId={execution_id}", headers=admin.headers
    )
    assert status.status_code == 200 and status.json()["context"]["inputs"] == {}
    events = await client.get(
        f"/audit/events?resource_id={execution_id}&event_type=workflow_execution",
        headers=admin.headers,
    )
    starts = [e for e in events.json()["events"] if e["action"] == "start"]
    assert len(starts) == 1
    assert starts[0]["details"]["request_id"] == "req-front"
    assert starts[0]["ip_address"] == "203.0.113.7"
    assert starts[0]["user_id"] == admin.user_id


async def test_the_fronts_refusals_are_the_stacks_envelopes(
    client: httpx.AsyncClient, admin: Session
) -> None:
    workflow_id = await _workflow(client, admin)
    key = await client.post(
        "/auth/keys", headers=admin.headers, json={"name": "reader", "scopes": ["workflow:read"]}
    )
    assert key.status_code == 201, key.text
    path = f"/workflows/{workflow_id}/execute"
    cases = [
        (path, {}, 401, "unauthorized"),
        (path, {"Authorization": "Bearer not-a-token"}, 401, "unauthorized"),
        (path, {"Authorization": "Basic abc"}, 401, "unauthorized"),
        (path, {"X-API-Key": "llo_sk_unknown"}, 401, "unauthorized"),
        (path, {"X-API-Key": key.json()["key"]}, 403, "forbidden"),
        (f"/workflows/{MISSING}/execute", admin.headers, 404, "not_found"),
        ("/workflows/not-a-uuid/execute", admin.headers, 404, "not_found"),
    ]
    body = {"inputs": {"x": "1"}}
    for where, credentials, code, error in cases:
        headers = {**credentials, "X-Request-ID": f"req-{code}"}
        front = await _post(client, where, headers, body)
        stack = await _post(client, where, {**headers, **STACK}, body)
        assert front.status_code == code, front.text
        answer = front.json()
        assert set(answer) == {"code", "message", "details", "request_id"}
        assert answer["code"] == error and answer["request_id"] == f"req-{code}"
        _alike(front, stack)
    # Every 401 and 403 above is in the trail, front and stack alike.
    denied = await client.get(
        "/audit/events?event_type=access_denied&limit=100", headers=admin.headers
    )
    paths = [e["action"] for e in denied.json()["events"] if e["action"].endswith("/execute")]
    assert len(paths) == 2 * 5


async def test_bodies_the_front_does_not_take_are_refused_by_fastapi_in_its_order(
    client: httpx.AsyncClient, admin: Session
) -> None:
    path = f"/workflows/{await _workflow(client, admin)}/execute"
    malformed: list[bytes] = [
        b"{not json",
        b"[]",
        b'{"inputs": "text"}',
        b'{"inputs": {}, "unknown": 1}',
        b'{"inputs": {}, "timeout_override": 0}',
        b'{"inputs": {}, "async": "maybe"}',
        b"",
    ]
    for body in malformed:
        # Unauthenticated: FastAPI asks for the caller first (a JSON syntax error aside,
        # which it refuses while reading the body).
        anonymous = await client.post(
            path, headers={"Content-Type": "application/json"}, content=body
        )
        expected = 400 if body == b"{not json" else 401
        assert anonymous.status_code == expected, (body, anonymous.text)
        refused = await _post(client, path, admin.headers, body)
        assert refused.status_code == 400, (body, refused.text)
        assert refused.json()["code"] == "validation_error"
        stack = await _post(client, path, {**admin.headers, **STACK}, body)
        assert stack.status_code == 400
        assert stack.json()["details"] == refused.json()["details"]
    # A value PostgreSQL cannot store: refused before the caller is asked, on the front too.
    for headers in ({}, admin.headers):
        unstorable = await _post(client, path, headers, {"inputs": {"x": "a\u0000b"}})
        assert unstorable.status_code == 400, unstorable.text
        assert unstorable.json()["details"]["errors"][0]["field"] == "inputs.x"
    # Not UTF-8: the input check refuses it too.
    utf16 = await _post(client, path, admin.headers, '{"inputs": {}}'.encode("utf-16"))
    assert utf16.status_code == 400, utf16.text


async def test_a_submit_with_an_idempotency_key_is_the_stacks_and_replays(
    client: httpx.AsyncClient, admin: Session
) -> None:
    path = f"/workflows/{await _workflow(client, admin)}/execute"
    headers = {**admin.headers, "Idempotency-Key": "front-key-1"}
    first = await _post(client, path, headers, {"inputs": {"x": "1"}})
    again = await _post(client, path, headers, {"inputs": {"x": "1"}})
    other = await _post(client, path, headers, {"inputs": {"x": "2"}})
    assert first.status_code == again.status_code == 202, first.text
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert other.status_code == 409, other.text
    assert other.json()["details"] == {"idempotency_key": "front-key-1"}


async def test_the_front_refuses_over_the_rate_limit_like_the_stack(
    client: httpx.AsyncClient, admin: Session, create_user: Any
) -> None:
    free = await create_user("front-execute-free", tier="free")
    path = f"/workflows/{MISSING}/execute"
    for _ in range(60):
        assert (await client.get("/workflows", headers=free.headers)).status_code == 200
    headers = {**free.headers, "X-Request-ID": "req-429"}
    front = await _post(client, path, headers, {"inputs": {}})
    stack = await _post(client, path, {**headers, **STACK}, {"inputs": {}})
    assert front.status_code == stack.status_code == 429, front.text
    assert front.json()["code"] == "rate_limited"
    assert int(front.headers["retry-after"]) >= 1
    assert front.headers["x-ratelimit-remaining"] == stack.headers["x-ratelimit-remaining"] == "0"
    assert front.content == stack.content
    assert list(front.headers.multi_items()) == list(stack.headers.multi_items())


async def test_the_front_counts_its_submits_by_route_template(
    client: httpx.AsyncClient, admin: Session
) -> None:
    path = f"/workflows/{await _workflow(client, admin)}/execute"
    for _ in range(2):
        assert (await _post(client, path, admin.headers, {"inputs": {}})).status_code == 202
    assert (await _post(client, path, {}, {"inputs": {}})).status_code == 401

    requests = (await scrape(client))["orchestrator_http_requests"]

    sample = "orchestrator_http_requests_total"
    route = "/api/v1/workflows/{workflow_id}/execute"
    assert value(requests, sample, route=route, status="202") == 2
    assert value(requests, sample, route=route, status="401") == 1


async def test_the_front_takes_plain_submits_only(server: LocalServer) -> None:
    app = server.app
    assert isinstance(app, OrchestratorApp) and app.hot_writes is not None
    execute = "/api/v1/workflows/w-1/execute"
    body = b'{"inputs": {}}'
    plain = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    taken = [("POST", execute, plain, body)]
    declined_unread = [
        ("GET", execute, plain, body),
        ("POST", "/api/v1/workflows", plain, body),
        ("POST", "/api/v1/workflows/w-1/pause", plain, body),
        ("POST", execute + "/", plain, body),
        ("POST", execute, plain[:1], body),  # no length: chunked
        ("POST", execute, [*plain, (b"transfer-encoding", b"chunked")], body),
        ("POST", execute, [plain[0], (b"content-length", b"0")], b""),
        ("POST", execute, [plain[0], (b"content-length", b"%d" % (11 * 1024 * 1024))], body),
        ("POST", execute, [(b"content-type", b"text/plain"), plain[1]], body),
        ("POST", execute, [(b"content-type", b"application/json; charset=utf-8"), plain[1]], body),
        ("POST", execute, [*plain, (b"content-type", b"application/json")], body),
    ]
    read_then_stack = [
        ("POST", execute, [plain[0], (b"content-length", b"7")], b"{nope!}"),
        ("POST", execute, [plain[0], (b"content-length", b"18")], b'{"inputs": {"a":1}'),
        ("POST", execute, [plain[0], (b"content-length", b"17")], b'{"async": false}\n'),
        ("POST", execute, [*plain, (b"idempotency-key", b"k")], body),
    ]
    for method, path, headers, content in taken + declined_unread + read_then_stack:
        sent: list[Any] = []
        received: list[int] = []
        stacked: list[bytes] = []

        async def receive(content: bytes = content, received: list[int] = received) -> Any:
            received.append(1)
            return {"type": "http.request", "body": content, "more_body": False}

        async def send(message: Any, sent: list[Any] = sent) -> None:
            sent.append(message)

        async def stack(scope: Any, replay: Any, send: Any, stacked: list[bytes] = stacked) -> None:
            stacked.append((await replay())["body"])

        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "root_path": "",
            "query_string": b"",
            "headers": headers,
            "client": ("203.0.113.7", 4242),
            "server": ("test", 80),
            "scheme": "http",
        }
        case = (method, path, headers, content)
        answered = await app.hot_writes.answer(app, scope, receive, send, stack)
        if case in declined_unread:
            assert (answered, received, sent, stacked) == (False, [], [], []), case
        elif case in read_then_stack:
            # Read, then given to the stack whole, untouched.
            assert (answered, sent, stacked) == (True, [], [content]), case
        else:
            # Taken, unauthenticated: the front's own 401.
            statuses = [m["status"] for m in sent if m["type"] == "http.response.start"]
            assert (answered, statuses, stacked) == (True, [401], []), case
    root_scope = {"type": "http", "method": "POST", "path": "/x" + execute}
    root_scope |= {"root_path": "/x", "query_string": b"", "headers": plain}

    async def never(*_: Any) -> Any:
        raise AssertionError("a declined request is not touched")

    assert await app.hot_writes.answer(app, root_scope, never, never, never) is False
