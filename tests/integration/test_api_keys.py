"""API keys: created once, stored hashed, scoped, expiring and revocable."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from llm_orchestrator.clock import utcnow


async def create_key(client, session, **body):
    payload = {"name": "ci", "scopes": ["workflow:read"], **body}
    return await client.post("/auth/keys", headers=session.headers, json=payload)


async def test_created_key_is_shown_once_and_listed_by_hash(client, admin):
    created = await create_key(
        client, admin, scopes=["workflow:read", "workflow:execute"], expires_in_days=90
    )

    assert created.status_code == 201
    body = created.json()
    assert body["key"].startswith("llo_sk_") and len(body["key"]) >= len("llo_sk_") + 22
    assert body["user_id"] == admin.user_id
    assert body["scopes"] == ["workflow:read", "workflow:execute"]
    assert body["expires_at"] is not None

    listed = (await client.get("/auth/keys", headers=admin.headers)).json()
    assert listed["total"] == 1 and listed["limit"] == 20 and listed["offset"] == 0
    entry = listed["keys"][0]
    assert "key" not in entry
    assert entry["key_hash"] == "sha256:" + hashlib.sha256(body["key"].encode()).hexdigest()
    assert entry["last_used_at"] is None


async def test_key_authenticates_and_records_last_use(client, admin):
    raw = (await create_key(client, admin, scopes=["admin"])).json()["key"]

    response = await client.get("/admin/users", headers={"X-API-Key": raw})

    assert response.status_code == 200
    listed = (await client.get("/auth/keys", headers=admin.headers)).json()
    assert listed["keys"][0]["last_used_at"] is not None


async def test_key_scope_limits_what_it_can_do(client, admin):
    raw = (await create_key(client, admin, scopes=["workflow:read"])).json()["key"]

    response = await client.get("/admin/users", headers={"X-API-Key": raw})

    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    assert response.json()["details"]["required_permission"] == "AdminAccess"


async def test_revoked_key_is_refused_immediately(client, admin):
    created = (await create_key(client, admin, scopes=["admin"])).json()
    assert (
        await client.get("/admin/users", headers={"X-API-Key": created["key"]})
    ).status_code == 200

    revoked = await client.delete(f"/auth/keys/{created['id']}", headers=admin.headers)

    assert revoked.status_code == 204 and revoked.content == b""
    after = await client.get("/admin/users", headers={"X-API-Key": created["key"]})
    assert after.status_code == 401
    assert (await client.get("/auth/keys", headers=admin.headers)).json()["total"] == 0
    again = await client.delete(f"/auth/keys/{created['id']}", headers=admin.headers)
    assert again.status_code == 404


async def test_expired_key_is_refused(client, admin, server):
    created = (await create_key(client, admin, scopes=["admin"], expires_in_days=1)).json()
    async with server.runtime.db.connection() as conn:
        await conn.execute(
            "UPDATE api_keys SET expires_at = %s WHERE id = %s",
            (utcnow() - timedelta(seconds=1), created["id"]),
        )

    response = await client.get("/admin/users", headers={"X-API-Key": created["key"]})

    assert response.status_code == 401
    assert "expired" in response.json()["message"]


async def test_unknown_and_malformed_keys_are_401(client):
    for key in ("llo_sk_" + "a" * 43, "not-a-key"):
        response = await client.get("/auth/keys", headers={"X-API-Key": key})
        assert response.status_code == 401


async def test_unknown_scope_is_a_validation_error(client, admin):
    response = await create_key(client, admin, scopes=["workflow:read", "everything"])

    assert response.status_code == 400
    assert response.json()["details"]["errors"] == [
        {"field": "scopes[1]", "message": response.json()["details"]["errors"][0]["message"]}
    ]
    assert "everything" in response.json()["details"]["errors"][0]["message"]


async def test_creating_keys_needs_admin_access(client, create_user):
    developer = await create_user("dev", roles=["developer"])

    response = await create_key(client, developer)

    assert response.status_code == 403


async def test_a_key_never_exceeds_its_owners_roles(client, admin, create_user):
    viewer = await create_user("viewer1", roles=["viewer"])

    too_much = await create_key(client, admin, user_id=viewer.user_id, scopes=["workflow:write"])
    assert too_much.status_code == 403
    assert too_much.json()["details"]["scopes"] == ["workflow:write"]

    fine = await create_key(client, admin, user_id=viewer.user_id, scopes=["workflow:read"])
    assert fine.status_code == 201
    assert fine.json()["user_id"] == viewer.user_id


async def test_key_permissions_shrink_when_the_owners_role_does(client, admin, create_user, server):
    dev = await create_user("dev2", roles=["developer"])
    raw = (await create_key(client, admin, user_id=dev.user_id, scopes=["workflow:read"])).json()[
        "key"
    ]
    key_headers = {"X-API-Key": raw}
    # The scope grants WorkflowRead and the owner holds it: the key may list workflows.
    assert (await client.get("/workflows", headers=key_headers)).status_code == 200

    async with server.runtime.db.connection() as conn:
        await conn.execute("UPDATE users SET roles = '{}' WHERE id = %s", (dev.user_id,))

    # The same scope, but the owner no longer holds WorkflowRead: the key loses it too.
    response = await client.get("/workflows", headers=key_headers)
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    assert response.json()["details"]["required_permission"] == "WorkflowRead"


async def test_users_cannot_revoke_each_others_keys(client, admin, create_user):
    created = (await create_key(client, admin)).json()
    dev = await create_user("dev3")

    response = await client.delete(f"/auth/keys/{created['id']}", headers=dev.headers)

    assert response.status_code == 404
    assert (await client.get("/auth/keys", headers=admin.headers)).json()["total"] == 1


async def test_revoking_a_malformed_key_id_is_404(client, admin):
    response = await client.delete("/auth/keys/not-a-uuid", headers=admin.headers)
    assert response.status_code == 404


async def test_expires_in_days_out_of_range_is_rejected(client, admin):
    response = await create_key(client, admin, expires_in_days=0)
    assert response.status_code == 400
    assert response.json()["details"]["errors"][0]["field"] == "expires_in_days"
