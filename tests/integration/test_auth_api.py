"""Logins, refresh-token rotation, bearer-token checks."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import timedelta

import jwt

from llm_orchestrator.auth.tokens import TokenCodec
from llm_orchestrator.clock import utcnow
from tests.integration.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, JWT_SECRET


async def test_login_returns_the_documented_token_response(client):
    response = await client.post(
        "/auth/login", json={"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
    )

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "access_token",
        "refresh_token",
        "token_type",
        "expires_in",
        "user_id",
        "roles",
    }
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["roles"] == ["admin"]
    header = jwt.get_unverified_header(body["access_token"])
    assert header["alg"] == "HS256" and header["kid"]
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["typ"] == "access" and claims["sub"] == body["user_id"]
    assert claims["exp"] - claims["iat"] == 3600


async def test_login_updates_last_login(client, admin):
    users = (await client.get("/admin/users", headers=admin.headers)).json()["users"]
    assert users[0]["last_login"] is not None


async def test_access_token_authenticates_and_missing_credentials_are_401(client, admin):
    assert (await client.get("/auth/keys", headers=admin.headers)).status_code == 200
    response = await client.get("/auth/keys")
    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"


async def test_refresh_rotates_and_the_new_tokens_work(client, admin):
    response = await client.post("/auth/refresh", json={"refresh_token": admin.refresh_token})

    assert response.status_code == 200
    body = response.json()
    assert body["refresh_token"] != admin.refresh_token
    assert body["user_id"] == admin.user_id
    listed = await client.get(
        "/auth/keys", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert listed.status_code == 200


async def test_reusing_a_refresh_token_revokes_its_whole_family(client, admin):
    first = await client.post("/auth/refresh", json={"refresh_token": admin.refresh_token})
    successor = first.json()["refresh_token"]

    replay = await client.post("/auth/refresh", json={"refresh_token": admin.refresh_token})
    assert replay.status_code == 401
    assert "revoked" in replay.json()["message"]

    # The legitimate successor dies with the family.
    after = await client.post("/auth/refresh", json={"refresh_token": successor})
    assert after.status_code == 401


async def test_concurrent_refreshes_with_one_token_let_only_one_through(client, admin):
    results = await asyncio.gather(
        *[
            client.post("/auth/refresh", json={"refresh_token": admin.refresh_token})
            for _ in range(5)
        ]
    )
    assert sorted(r.status_code for r in results) == [200, 401, 401, 401, 401]


async def test_access_token_is_not_accepted_as_refresh_token_and_vice_versa(client, admin):
    as_refresh = await client.post("/auth/refresh", json={"refresh_token": admin.access_token})
    assert as_refresh.status_code == 401
    as_access = await client.get(
        "/auth/keys", headers={"Authorization": f"Bearer {admin.refresh_token}"}
    )
    assert as_access.status_code == 401


async def test_expired_access_token_is_refused(client, admin):
    codec = TokenCodec(JWT_SECRET, key_id="k1")
    token, _ = codec.issue(
        subject=admin.user_id,
        token_type="access",
        now=utcnow() - timedelta(hours=2),
        ttl=timedelta(hours=1),
    )
    response = await client.get("/auth/keys", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json()["message"] == "Token expired"


async def test_tampered_token_is_refused(client, admin):
    header, payload, signature = admin.access_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["sub"] = "user-someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    response = await client.get(
        "/auth/keys", headers={"Authorization": f"Bearer {header}.{forged}.{signature}"}
    )
    assert response.status_code == 401


async def test_alg_none_token_is_refused(client, admin):
    claims = jwt.decode(admin.access_token, options={"verify_signature": False})
    unsigned = jwt.encode(claims, key=None, algorithm="none", headers={"kid": "k1"})
    response = await client.get("/auth/keys", headers={"Authorization": f"Bearer {unsigned}"})
    assert response.status_code == 401


async def test_token_signed_with_another_key_or_kid_is_refused(client, admin):
    claims = jwt.decode(admin.access_token, options={"verify_signature": False})
    other_secret = jwt.encode(claims, "y" * 48, algorithm="HS256", headers={"kid": "k1"})
    other_kid = jwt.encode(claims, JWT_SECRET, algorithm="HS256", headers={"kid": "k2"})
    for token in (other_secret, other_kid, "not-a-jwt"):
        response = await client.get("/auth/keys", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, token


async def test_login_rejects_a_malformed_body(client):
    response = await client.post("/auth/login", json={"username": "admin"})
    assert response.status_code == 400
    assert response.json()["details"]["errors"] == [
        {"field": "password", "message": "Field required"}
    ]


async def test_bearer_wins_when_an_api_key_is_sent_too(client, admin, create_user):
    admin_key = (
        await client.post(
            "/auth/keys", headers=admin.headers, json={"name": "k", "scopes": ["admin"]}
        )
    ).json()["key"]
    developer = await create_user("dev", roles=["developer"])

    both = {**developer.headers, "X-API-Key": admin_key}
    response = await client.get("/admin/users", headers=both)

    # The developer's token decides, not the admin key sent alongside it.
    assert response.status_code == 403
    assert response.json()["details"]["required_permission"] == "AdminAccess"
    bad_bearer = {"Authorization": "Bearer not-a-jwt", "X-API-Key": admin_key}
    assert (await client.get("/admin/users", headers=bad_bearer)).status_code == 401
    assert (await client.get("/admin/users", headers={"X-API-Key": admin_key})).status_code == 200


async def test_an_unsupported_authorization_scheme_is_401_naming_bearer(client):
    response = await client.get(
        "/auth/keys", headers={"Authorization": "Basic YWRtaW46YWRtaW4tcGFzc3dvcmQ="}
    )

    assert response.status_code == 401
    assert response.json()["code"] == "unauthorized"
    assert "Unsupported Authorization scheme" in response.json()["message"]
    assert "Bearer" in response.json()["message"]


async def test_a_refresh_token_past_its_stored_expiry_is_refused(client, admin, server):
    async with server.runtime.db.connection() as conn:
        await conn.execute(
            "UPDATE refresh_tokens SET expires_at = now() - interval '1 second' WHERE user_id = %s",
            (admin.user_id,),
        )

    response = await client.post("/auth/refresh", json={"refresh_token": admin.refresh_token})

    assert response.status_code == 401
    assert response.json()["message"] == "Invalid refresh token"


async def test_an_expired_refresh_jwt_is_refused(client, admin):
    codec = TokenCodec(JWT_SECRET, key_id="k1")
    token, _ = codec.issue(
        subject=admin.user_id,
        token_type="refresh",
        now=utcnow() - timedelta(days=60),
        ttl=timedelta(days=30),
        family_id=uuid.uuid4(),
    )

    response = await client.post("/auth/refresh", json={"refresh_token": token})

    assert response.status_code == 401
    assert response.json()["message"] == "Token expired"


async def test_a_validly_signed_refresh_token_never_issued_is_refused(client, admin):
    # Signed with the server's own secret, so only the lookup of issued tokens can refuse it.
    codec = TokenCodec(JWT_SECRET, key_id="k1")
    token, _ = codec.issue(
        subject=admin.user_id,
        token_type="refresh",
        now=utcnow(),
        ttl=timedelta(days=1),
        family_id=uuid.uuid4(),
    )

    response = await client.post("/auth/refresh", json={"refresh_token": token})

    assert response.status_code == 401
    assert response.json()["message"] == "Invalid refresh token"
    garbage = await client.post("/auth/refresh", json={"refresh_token": "not-a-token"})
    assert garbage.status_code == 401
