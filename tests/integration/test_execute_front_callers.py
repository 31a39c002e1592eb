"""Who may submit, decided at the app's front exactly as the stack decides it: a key revoked
between two submits, a role that may not execute, a workflow of another owner, an input
the database cannot store. Each front answer is compared with the stack's for the same
request (``tests/integration/test_execute_front.py`` has the plain and malformed ones)."""

from __future__ import annotations

import httpx

from tests.integration.conftest import CreateUser, Session
from tests.integration.test_execute_front import STACK, _alike, _post, _workflow

SAME_ID = {"X-Request-ID": "req-callers"}
"""Both sides of a comparison answer under one request id."""


async def test_a_key_revoked_between_two_submits_is_refused_on_the_second(
    client: httpx.AsyncClient, admin: Session
) -> None:
    workflow_id = await _workflow(client, admin)
    created = await client.post(
        "/auth/keys",
        headers=admin.headers,
        json={"name": "runner", "scopes": ["workflow:execute"]},
    )
    assert created.status_code == 201, created.text
    key = created.json()
    path = f"/workflows/{workflow_id}/execute"
    headers = {"X-API-Key": key["key"], **SAME_ID}
    accepted = await _post(client, path, headers, {"inputs": {"x": "1"}})
    assert accepted.status_code == 202, accepted.text

    revoked = await client.delete(f"/auth/keys/{key['id']}", headers=admin.headers)
    assert revoked.status_code == 204
    front = await _post(client, path, headers, {"inputs": {"x": "2"}})
    stack = await _post(client, path, {**headers, **STACK}, {"inputs": {"x": "2"}})

    assert front.status_code == 401
    assert front.json()["code"] == "unauthorized"
    _alike(front, stack)


async def test_a_viewer_may_not_submit(
    client: httpx.AsyncClient, admin: Session, create_user: CreateUser
) -> None:
    workflow_id = await _workflow(client, admin)
    viewer = await create_user("watcher", roles=["viewer"])
    path = f"/workflows/{workflow_id}/execute"

    front = await _post(client, path, {**viewer.headers, **SAME_ID}, {"inputs": {"x": "1"}})
    stack = await _post(
        client, path, {**viewer.headers, **SAME_ID, **STACK}, {"inputs": {"x": "1"}}
    )

    assert front.status_code == 403
    assert front.json()["code"] == "forbidden"
    _alike(front, stack)


async def test_another_owners_workflow_is_not_found(
    client: httpx.AsyncClient, create_user: CreateUser
) -> None:
    owner = await create_user("owner")
    other = await create_user("other")
    workflow_id = await _workflow(client, owner)
    path = f"/workflows/{workflow_id}/execute"

    front = await _post(client, path, {**other.headers, **SAME_ID}, {"inputs": {"x": "1"}})
    stack = await _post(client, path, {**other.headers, **SAME_ID, **STACK}, {"inputs": {"x": "1"}})

    assert front.status_code == 404
    assert front.json()["code"] == "not_found"
    _alike(front, stack)
    mine = await _post(client, path, owner.headers, {"inputs": {"x": "1"}})
    assert mine.status_code == 202, mine.text


async def test_an_input_the_database_cannot_store_is_refused_alike(
    client: httpx.AsyncClient, admin: Session
) -> None:
    workflow_id = await _workflow(client, admin)
    path = f"/workflows/{workflow_id}/execute"
    for inputs in ({"x": "a\u0000b"}, {"x\u0000": "1"}):
        front = await _post(client, path, {**admin.headers, **SAME_ID}, {"inputs": inputs})
        stack = await _post(client, path, {**admin.headers, **SAME_ID, **STACK}, {"inputs": inputs})

        assert 400 <= front.status_code < 500, front.text
        assert set(front.json()) >= {"code", "message", "details", "request_id"}
        _alike(front, stack)
