"""The whole API in-process over httpx, on a fresh database per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from llm_orchestrator.config import Settings
from llm_orchestrator.server import LocalServer, bootstrap, build_local_server

ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "admin-password-for-tests"
JWT_SECRET = "test-secret-" + "x" * 40


@pytest.fixture
def settings(database_url: str, data_dir: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=data_dir,
        admin_username=ADMIN_USERNAME,
        admin_password=ADMIN_PASSWORD,
        jwt_secret=JWT_SECRET,
        db_pool_max_size=20,
    )


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[LocalServer]:
    local = build_local_server(settings, database_url=settings.database_url)
    await bootstrap(local.runtime)
    yield local
    await local.runtime.close()


@pytest.fixture
async def client(server: LocalServer) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=server.app, client=("203.0.113.7", 4242))
    async with httpx.AsyncClient(transport=transport, base_url="http://test/api/v1") as http:
        yield http


@dataclass
class Session:
    """A logged-in user: ``headers`` authenticate every call."""

    user_id: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


Login = Callable[[str, str], Awaitable[Session]]


@pytest.fixture
def login(client: httpx.AsyncClient) -> Login:
    async def do_login(username: str, password: str) -> Session:
        response = await client.post(
            "/auth/login", json={"username": username, "password": password}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        return Session(body["user_id"], body["access_token"], body["refresh_token"])

    return do_login


@pytest.fixture
async def admin(login: Login) -> Session:
    return await login(ADMIN_USERNAME, ADMIN_PASSWORD)


CreateUser = Callable[..., Awaitable[Session]]


@pytest.fixture
def create_user(client: httpx.AsyncClient, admin: Session, login: Login) -> CreateUser:
    """Create a user through the admin API and log them in."""

    async def make(
        username: str = "dev", roles: list[str] | None = None, tier: str = "free"
    ) -> Session:
        password = f"{username}-password"
        response = await client.post(
            "/admin/users",
            headers=admin.headers,
            json={
                "username": username,
                "email": f"{username}@example.com",
                "password": password,
                "roles": roles or ["developer"],
                "tier": tier,
            },
        )
        assert response.status_code == 201, response.text
        return await login(username, password)

    return make
