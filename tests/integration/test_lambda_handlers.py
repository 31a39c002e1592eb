"""Each endpoint group's Lambda handler, driven by an API Gateway REST proxy event."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from llm_orchestrator.config import get_settings
from tests.integration.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, JWT_SECRET
from tests.support import FakeLambdaContext

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"


def rest_event(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None):
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": {"Content-Type": "application/json", **(headers or {})},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": f"/prod{path}",
            "stage": "prod",
            "requestId": "apigw-request-1",
            "identity": {"sourceIp": "198.51.100.4", "userAgent": "pytest"},
            "accountId": "123456789012",
            "apiId": "abc123",
        },
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
    }


LOADED: list[ModuleType] = []


def load_handler(group: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"handler_{group}", FUNCTIONS / group / "handler.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    LOADED.append(module)
    return module


@pytest.fixture
def lambda_env(
    monkeypatch: pytest.MonkeyPatch, database_url: str, data_dir: Path
) -> Iterator[None]:
    from llm_orchestrator.store.migrate import apply_migrations  # noqa: F401  (already migrated)

    for name, value in {
        "LLMO_DATABASE_URL": database_url,
        "LLMO_DATA_DIR": str(data_dir),
        "LLMO_JWT_SECRET": JWT_SECRET,
        "LLMO_ENVIRONMENT": "test",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "LLMOrchestratorTest",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield
    while LOADED:
        LOADED.pop().handler.close()
    get_settings.cache_clear()


def _seed_admin(database_url: str) -> None:
    import asyncio

    from llm_orchestrator.auth.users import UserService
    from llm_orchestrator.store.db import Database
    from llm_orchestrator.store.users import UserRepository

    async def seed() -> None:
        db = Database(database_url)
        await UserService(UserRepository(db)).ensure_admin(ADMIN_USERNAME, ADMIN_PASSWORD)
        await db.close()

    asyncio.run(seed())


def test_monitoring_handler_answers_health_with_request_id(lambda_env: None) -> None:
    handler = load_handler("monitoring").handler

    response = handler(rest_event("GET", "/api/v1/health/live"), FakeLambdaContext())

    assert response["statusCode"] == 200
    assert json.loads(response["body"])["status"] == "healthy"
    headers = {k.lower(): v for k, v in response["multiValueHeaders"].items()} | {
        k.lower(): [v] for k, v in (response.get("headers") or {}).items()
    }
    assert headers["x-request-id"][0].startswith("req-")


def test_auth_handler_logs_in_and_admin_handler_lists_users(
    lambda_env: None, database_url: str
) -> None:
    _seed_admin(database_url)
    auth = load_handler("auth").handler
    admin = load_handler("admin").handler

    login = auth(
        rest_event(
            "POST", "/api/v1/auth/login", {"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
        ),
        FakeLambdaContext(),
    )
    assert login["statusCode"] == 200, login["body"]
    token = json.loads(login["body"])["access_token"]

    users = admin(
        rest_event("GET", "/api/v1/admin/users", headers={"Authorization": f"Bearer {token}"}),
        FakeLambdaContext(),
    )
    assert users["statusCode"] == 200
    assert [u["username"] for u in json.loads(users["body"])["users"]] == [ADMIN_USERNAME]


def test_handler_error_body_has_the_envelope(lambda_env: None) -> None:
    admin = load_handler("admin").handler

    response = admin(
        rest_event("GET", "/api/v1/admin/users", headers={"X-Request-ID": "trace-42"}),
        FakeLambdaContext(),
    )

    assert response["statusCode"] == 401
    body = json.loads(response["body"])
    assert body["code"] == "unauthorized"
    assert body["request_id"] == "trace-42"


def test_handler_modules_import_no_provider_sdks() -> None:
    handler_path = str(FUNCTIONS / "auth" / "handler.py")
    heavy = ("openai", "anthropic", "cohere", "boto3", "psycopg_pool")
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('h', {handler_path!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        f"print(','.join(n for n in {heavy!r} if n in sys.modules))\n"
    )
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
