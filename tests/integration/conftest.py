"""The whole API in-process over httpx, on a fresh database per test.

A test that uses ``fake_openai`` (as an argument, through another fixture, or with
``pytest.mark.usefixtures``) gets a ``server`` whose providers talk to that fake through
the real OpenAI SDK; any other test's server reads provider settings from the process
environment as ``llmo serve`` does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from llm_orchestrator.config import Settings, get_settings
from llm_orchestrator.server import LocalServer, bootstrap, build_local_server
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.live_server import LiveServer, start_live_server

ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "admin-password-for-tests"
JWT_SECRET = "test-secret-" + "x" * 40
FAKE_API_KEY = "sk-test-executions"


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
def fake_openai() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.start(api_key=FAKE_API_KEY) as fake:
        yield fake


def fake_environ(fake: FakeOpenAI) -> dict[str, str]:
    """Provider settings that point the OpenAI provider at ``fake`` (and nothing else)."""
    return {"OPENAI_API_KEY": FAKE_API_KEY, "OPENAI_BASE_URL": fake.base_url}


@asynccontextmanager
async def serving(
    settings: Settings,
    fake: FakeOpenAI | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    **runtime_options: Any,
) -> AsyncIterator[LocalServer]:
    """The API, bootstrapped; its providers point at ``fake`` when given (never at the
    process environment), else at ``environ`` (default: the process environment).
    ``runtime_options`` are :class:`Runtime`'s clocks, timers and jitter source."""
    if fake is not None:
        environ = fake_environ(fake)
    local = build_local_server(
        settings, database_url=settings.database_url, environ=environ, **runtime_options
    )
    await bootstrap(local.runtime)
    try:
        yield local
    finally:
        await local.runtime.close()


@pytest.fixture
async def server(request: pytest.FixtureRequest, settings: Settings) -> AsyncIterator[LocalServer]:
    fake = request.getfixturevalue("fake_openai") if "fake_openai" in request.fixturenames else None
    async with serving(settings, fake) as local:
        yield local


@pytest.fixture
def live(settings: Settings, fake_openai: FakeOpenAI) -> Iterator[LiveServer]:
    """The API on a real TCP port (for the SDK and ``llmo``), its providers on the fake."""
    server = start_live_server(settings, fake_environ(fake_openai))
    yield server
    server.stop()


@pytest.fixture
def lambda_env(
    monkeypatch: pytest.MonkeyPatch, database_url: str, data_dir: Path
) -> Iterator[None]:
    """The environment the Lambda handlers in ``functions/`` read, on the test's database;
    the handlers ``lambda_support.load_handler`` loaded meanwhile are closed afterwards."""
    from llm_orchestrator.store.migrate import apply_migrations  # noqa: F401  (already migrated)
    from tests.integration.lambda_support import close_loaded

    for name, value in {
        "LLMO_DATABASE_URL": database_url,
        "LLMO_DATA_DIR": str(data_dir),
        "LLMO_JWT_SECRET": JWT_SECRET,
        "LLMO_ENVIRONMENT": "test",
        # Outside "local" the audit HMAC key is never generated: it must be configured.
        "LLMO_AUDIT_HMAC_KEY": "audit-hmac-key-for-tests-" + "k" * 32,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "LLMOrchestratorTest",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield
    close_loaded()
    get_settings.cache_clear()


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
