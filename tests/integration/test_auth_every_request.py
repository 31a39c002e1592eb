"""Authentication is decided on every request, however many came just before: a revoked
key, a logged-out session or a changed role applies to the very next request, with nothing
cached in between (the user lookup that also counts the rate limit reads them all)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from llm_orchestrator.config import Settings
from llm_orchestrator.server import LocalServer
from tests.integration.conftest import CreateUser, Session
from tests.support import stored_execution

BURST = 40


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Forty requests share twenty connections: at load 10-12 on two cores some waited past
    # the 3 s pool deadline and the burst got 503s. These tests are about what the request
    # after the burst sees; the deadlines have their own tests (test_faults).
    return settings.model_copy(
        update={"db_pool_timeout_seconds": 30.0, "db_statement_timeout_seconds": 30.0}
    )


async def burst(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    answers = await asyncio.gather(
        *(client.get("/workflows", headers=headers) for _ in range(BURST))
    )
    assert [a.status_code for a in answers] == [200] * BURST


async def test_a_revoked_key_is_refused_on_the_next_request_right_after_a_burst(
    client: httpx.AsyncClient, admin: Session
) -> None:
    created = await client.post(
        "/auth/keys", headers=admin.headers, json={"name": "ci", "scopes": ["workflow:read"]}
    )
    assert created.status_code == 201, created.text
    key = created.json()
    headers = {"X-API-Key": key["key"]}
    await burst(client, headers)

    revoked = await client.delete(f"/auth/keys/{key['id']}", headers=admin.headers)
    assert revoked.status_code == 204
    refused = await client.get("/workflows", headers=headers)

    assert refused.status_code == 401
    assert refused.json()["code"] == "unauthorized"


async def test_a_role_taken_away_applies_to_the_next_request_right_after_a_burst(
    client: httpx.AsyncClient, create_user: CreateUser, server: LocalServer
) -> None:
    dev = await create_user("dev", roles=["developer"])
    await burst(client, dev.headers)

    # There is no endpoint for roles: an operator changes them in the database.
    async with server.runtime.db.connection() as conn:
        await conn.execute("UPDATE users SET roles = ARRAY['viewer'] WHERE id = %s", (dev.user_id,))
    refused = await client.post(
        "/workflows",
        headers=dev.headers,
        json={
            "name": "w",
            "steps": [
                {
                    "id": "s",
                    "type": "llm",
                    "provider": "openai",
                    "model": "gpt-4",
                    "prompt": "hi",
                    "output": ["o"],
                }
            ],
        },
    )

    assert refused.status_code == 403
    assert refused.json()["details"]["required_permission"] == "WorkflowWrite"


async def test_a_logged_out_session_is_refused_on_the_next_request_right_after_a_burst(
    client: httpx.AsyncClient, create_user: CreateUser
) -> None:
    dev = await create_user("dev", roles=["developer"])
    await burst(client, dev.headers)

    assert (await client.post("/auth/logout", headers=dev.headers)).status_code in (200, 204)
    refused = await client.get("/workflows", headers=dev.headers)

    assert refused.status_code == 401
    assert refused.json()["code"] == "unauthorized"


async def test_a_revoked_session_is_refused_on_the_next_request_right_after_a_burst(
    client: httpx.AsyncClient, create_user: CreateUser
) -> None:
    dev = await create_user("dev", roles=["developer"])
    await burst(client, dev.headers)

    # Reusing a refresh token revokes its whole family, the access token's session included.
    first = await client.post("/auth/refresh", json={"refresh_token": dev.refresh_token})
    assert first.status_code == 200
    reused = await client.post("/auth/refresh", json={"refresh_token": dev.refresh_token})
    assert reused.status_code == 401
    refused = await client.get("/workflows", headers=dev.headers)

    assert refused.status_code == 401
    assert refused.json()["message"] == "Session revoked; log in again"


async def test_a_keys_owner_losing_a_role_applies_to_the_next_request_right_after_a_burst(
    client: httpx.AsyncClient, admin: Session, create_user: CreateUser, server: LocalServer
) -> None:
    dev = await create_user("dev", roles=["developer"])
    created = await client.post(
        "/auth/keys",
        headers=admin.headers,
        json={"name": "ci", "scopes": ["workflow:read"], "user_id": dev.user_id},
    )
    assert created.status_code == 201, created.text
    headers = {"X-API-Key": created.json()["key"]}
    await burst(client, headers)

    async with server.runtime.db.connection() as conn:
        await conn.execute("UPDATE users SET roles = '{}' WHERE id = %s", (dev.user_id,))
    refused = await client.get("/workflows", headers=headers)

    assert refused.status_code == 403
    assert refused.json()["details"]["required_permission"] == "WorkflowRead"


def _workflow(name: str) -> dict[str, object]:
    step = {"id": "s", "type": "llm", "provider": "openai", "model": "gpt-4", "prompt": "hi"}
    return {"name": name, "steps": [{**step, "output": ["o"]}]}


async def test_a_role_change_decides_what_the_next_read_shows_right_after_a_burst(
    client: httpx.AsyncClient, admin: Session, create_user: CreateUser, server: LocalServer
) -> None:
    """A read goes out with the authenticating lookup, built for the rows the caller saw
    last time; the roles that lookup returns still decide what the answer holds."""
    dev = await create_user("dev", roles=["developer"])
    created = await client.post("/workflows", headers=dev.headers, json=_workflow("devs"))
    assert created.status_code == 201, created.text
    # The admin's workflow ("w") and a run of it.
    execution_id = await stored_execution(
        server.runtime, admin.user_id, _workflow("w"), timeout_seconds=60
    )
    async with server.runtime.db.connection() as conn:
        cur = await conn.execute(
            "SELECT workflow_id FROM executions WHERE id = %s", (execution_id,)
        )
        admins_id = (await cur.fetchone())["workflow_id"]
    status = f"/workflows/{admins_id}/status?executionId={execution_id}"

    async def set_roles(roles: list[str]) -> None:
        async with server.runtime.db.connection() as conn:
            await conn.execute("UPDATE users SET roles = %s WHERE id = %s", (roles, dev.user_id))

    async def seen() -> tuple[list[str], int]:
        listed = await client.get("/workflows", headers=dev.headers)
        assert listed.status_code == 200, listed.text
        read = await client.get(status, headers=dev.headers)
        return sorted(w["name"] for w in listed.json()["workflows"]), read.status_code

    await burst(client, dev.headers)
    assert await seen() == (["devs"], 404)
    await set_roles(["admin"])
    assert await seen() == (["devs", "w"], 200)
    assert await seen() == (["devs", "w"], 200)
    await set_roles(["developer"])
    assert await seen() == (["devs"], 404)
    await set_roles([])
    refused = await client.get("/workflows", headers=dev.headers)
    assert refused.status_code == 403
    assert refused.json()["details"]["required_permission"] == "WorkflowRead"
    refused = await client.get(status, headers=dev.headers)
    assert refused.status_code == 403
    assert refused.json()["details"]["required_permission"] == "ExecutionRead"


async def test_a_role_change_decides_what_an_api_keys_next_read_shows(
    client: httpx.AsyncClient, admin: Session, create_user: CreateUser, server: LocalServer
) -> None:
    """As above for an API key: its admin scope counts only while its owner is an admin."""
    boss = await create_user("boss", roles=["admin"])
    for owner, name in ((boss, "boss"), (admin, "admins")):
        created = await client.post("/workflows", headers=owner.headers, json=_workflow(name))
        assert created.status_code == 201, created.text
    key = await client.post(
        "/auth/keys",
        headers=admin.headers,
        json={"name": "ci", "scopes": ["workflow:read", "admin"], "user_id": boss.user_id},
    )
    assert key.status_code == 201, key.text
    headers = {"X-API-Key": key.json()["key"]}

    async def set_roles(roles: list[str]) -> None:
        async with server.runtime.db.connection() as conn:
            await conn.execute("UPDATE users SET roles = %s WHERE id = %s", (roles, boss.user_id))

    async def seen() -> list[str]:
        listed = await client.get("/workflows", headers=headers)
        assert listed.status_code == 200, listed.text
        return sorted(w["name"] for w in listed.json()["workflows"])

    await burst(client, headers)
    assert await seen() == ["admins", "boss"]
    await set_roles(["developer"])
    assert await seen() == ["boss"]
    assert await seen() == ["boss"]
    await set_roles(["admin"])
    assert await seen() == ["admins", "boss"]


async def test_a_role_change_decides_which_workflow_the_next_submit_may_start(
    client: httpx.AsyncClient, admin: Session, create_user: CreateUser, server: LocalServer
) -> None:
    """A submit's workflow and budget are read with the authenticating lookup, for the rows
    the caller saw last time; the roles that lookup returns still decide what it may start,
    and a session logged out is refused on the very next submit."""
    dev = await create_user("dev", roles=["developer"])
    theirs = await client.post("/workflows", headers=admin.headers, json=_workflow("admins"))
    own = await client.post("/workflows", headers=dev.headers, json=_workflow("devs"))
    assert theirs.status_code == own.status_code == 201, (theirs.text, own.text)

    async def set_roles(roles: list[str]) -> None:
        async with server.runtime.db.connection() as conn:
            await conn.execute("UPDATE users SET roles = %s WHERE id = %s", (roles, dev.user_id))

    async def submits() -> tuple[int, int]:
        """Theirs first: right after a role change, that read was built for the old one."""
        answers = [
            await client.post(
                f"/workflows/{created.json()['id']}/execute",
                headers=dev.headers,
                json={"inputs": {}},
            )
            for created in (theirs, own)
        ]
        return answers[0].status_code, answers[1].status_code

    await burst(client, dev.headers)
    assert await submits() == (404, 202)
    await set_roles(["admin"])
    assert await submits() == (202, 202)
    assert await submits() == (202, 202)
    await set_roles(["developer"])
    assert await submits() == (404, 202)
    await set_roles(["viewer"])
    assert await submits() == (403, 403)
    await set_roles(["developer"])
    assert await submits() == (404, 202)
    assert (await client.post("/auth/logout", headers=dev.headers)).status_code in (200, 204)
    assert await submits() == (401, 401)
