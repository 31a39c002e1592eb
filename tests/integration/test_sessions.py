"""Access tokens die with their login session (refresh-token family): on reuse of a refresh
token and on logout."""

from __future__ import annotations

import uuid
from datetime import timedelta

import jwt

from llm_orchestrator.auth.tokens import TokenCodec
from llm_orchestrator.clock import utcnow
from tests.integration.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, JWT_SECRET


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_an_access_token_names_its_session(admin):
    access = jwt.decode(admin.access_token, options={"verify_signature": False})
    refresh = jwt.decode(admin.refresh_token, options={"verify_signature": False})
    assert access["fam"] == refresh["fam"]


async def test_reusing_a_refresh_token_revokes_the_sessions_access_tokens(client, admin):
    # The attacker redeems the stolen refresh token first and gets their own access token.
    stolen = await client.post("/auth/refresh", json={"refresh_token": admin.refresh_token})
    assert stolen.status_code == 200
    attacker_access = stolen.json()["access_token"]
    assert (await client.get("/auth/keys", headers=bearer(attacker_access))).status_code == 200

    # The victim's client presents the same refresh token: reuse, the family is revoked.
    reuse = await client.post("/auth/refresh", json={"refresh_token": admin.refresh_token})
    assert reuse.status_code == 401

    for token in (admin.access_token, attacker_access):
        refused = await client.get("/auth/keys", headers=bearer(token))
        assert refused.status_code == 401
        assert refused.json()["code"] == "unauthorized"
        assert refused.json()["message"] == "Session revoked; log in again"


async def test_logout_ends_the_session_and_only_that_session(client, admin, login):
    other = await login(ADMIN_USERNAME, ADMIN_PASSWORD)

    response = await client.post("/auth/logout", headers=admin.headers)

    assert response.status_code == 204
    assert (await client.get("/auth/keys", headers=admin.headers)).status_code == 401
    refresh = await client.post("/auth/refresh", json={"refresh_token": admin.refresh_token})
    assert refresh.status_code == 401
    # Another login of the same user goes on.
    assert (await client.get("/auth/keys", headers=other.headers)).status_code == 200
    events = await client.get(
        "/audit/events", headers=other.headers, params={"event_type": "authentication"}
    )
    assert "Logout" in [e["action"] for e in events.json()["events"]]


async def test_a_refresh_racing_a_logout_cannot_keep_the_session_alive(client, admin):
    successor = await client.post("/auth/refresh", json={"refresh_token": admin.refresh_token})
    assert successor.status_code == 200
    pair = successor.json()

    assert (
        await client.post("/auth/logout", headers=bearer(pair["access_token"]))
    ).status_code == 204

    for token in (pair["refresh_token"], admin.refresh_token):
        again = await client.post("/auth/refresh", json={"refresh_token": token})
        assert again.status_code == 401


async def test_logout_with_an_api_key_is_refused(client, admin):
    created = await client.post(
        "/auth/keys", headers=admin.headers, json={"name": "ci", "scopes": ["admin"]}
    )
    key = created.json()["key"]

    response = await client.post("/auth/logout", headers={"X-API-Key": key})

    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"
    assert "DELETE /auth/keys" in response.json()["message"]
    assert (await client.get("/auth/keys", headers={"X-API-Key": key})).status_code == 200


async def test_an_authorization_header_of_another_scheme_is_refused_beside_a_good_key(
    client, admin
):
    created = await client.post(
        "/auth/keys", headers=admin.headers, json={"name": "ci", "scopes": ["admin"]}
    )
    key = created.json()["key"]

    response = await client.get(
        "/auth/keys", headers={"X-API-Key": key, "Authorization": "Basic YTpi"}
    )

    assert response.status_code == 401
    assert "Bearer" in response.json()["message"]
    assert (await client.get("/auth/keys", headers={"X-API-Key": key})).status_code == 200


async def test_logout_needs_authentication(client):
    response = await client.post("/auth/logout")
    assert response.status_code == 401


async def test_an_access_token_without_a_session_is_refused(client, admin):
    codec = TokenCodec(JWT_SECRET, key_id="k1")
    sessionless, _ = codec.issue(
        subject=admin.user_id, token_type="access", now=utcnow(), ttl=timedelta(hours=1)
    )
    unknown_session, _ = codec.issue(
        subject=admin.user_id,
        token_type="access",
        now=utcnow(),
        ttl=timedelta(hours=1),
        family_id=uuid.uuid4(),
    )

    assert (await client.get("/auth/keys", headers=bearer(sessionless))).status_code == 401
    # A session id the server never issued names no revoked family: the signature is what
    # vouches for it, as before.
    assert (await client.get("/auth/keys", headers=bearer(unknown_session))).status_code == 200
