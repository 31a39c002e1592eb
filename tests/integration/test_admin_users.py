"""GET/POST /admin/users."""

from __future__ import annotations


async def test_admin_creates_a_user_without_leaking_password_material(client, admin):
    response = await client.post(
        "/admin/users",
        headers=admin.headers,
        json={
            "username": "newuser",
            "email": "newuser@example.com",
            "password": "SecureP@ssw0rd",
            "roles": ["developer"],
        },
    )

    assert response.status_code == 201
    body = response.json()
    assert body["id"].startswith("user-")
    assert body["username"] == "newuser" and body["roles"] == ["developer"]
    assert body["last_login"] is None
    assert "SecureP@ssw0rd" not in response.text and "argon2" not in response.text
    assert "password" not in body and "password_hash" not in body


async def test_duplicate_username_is_409(client, admin, create_user):
    await create_user("taken")

    response = await client.post(
        "/admin/users",
        headers=admin.headers,
        json={"username": "taken", "email": "t@example.com", "password": "long-enough-1"},
    )

    assert response.status_code == 409
    assert response.json()["code"] == "conflict"


async def test_invalid_email_role_and_short_password_are_reported_per_field(client, admin):
    response = await client.post(
        "/admin/users",
        headers=admin.headers,
        json={"username": "x", "email": "not-an-email", "password": "short", "roles": ["root"]},
    )

    assert response.status_code == 400
    fields = {e["field"] for e in response.json()["details"]["errors"]}
    assert fields == {"email", "password", "roles[0]"}


async def test_non_admins_are_forbidden_from_admin_routes(client, create_user):
    dev = await create_user("dev")

    listed = await client.get("/admin/users", headers=dev.headers)
    created = await client.post(
        "/admin/users",
        headers=dev.headers,
        json={"username": "y", "email": "y@example.com", "password": "long-enough-1"},
    )

    assert listed.status_code == created.status_code == 403


async def test_users_list_is_paginated(client, admin, create_user):
    for name in ("u1", "u2", "u3"):
        await create_user(name)

    page = (await client.get("/admin/users?limit=2&offset=1", headers=admin.headers)).json()

    assert page["total"] == 4 and page["limit"] == 2 and page["offset"] == 1
    assert [u["username"] for u in page["users"]] == ["u1", "u2"]
