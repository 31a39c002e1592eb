"""Driving the Lambda handlers in ``functions/`` as API Gateway would: their REST proxy
events, loading a handler module from its file, and the admin a fresh database lacks. The
``lambda_env`` fixture (``conftest.py``) sets the environment they read."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.integration.conftest import ADMIN_PASSWORD, ADMIN_USERNAME

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


def close_loaded() -> None:
    """Close every handler ``load_handler`` loaded (their pools and loops)."""
    while LOADED:
        LOADED.pop().handler.close()


def seed_admin(database_url: str) -> None:
    import asyncio

    from llm_orchestrator.auth.passwords import Passwords
    from llm_orchestrator.auth.users import UserService
    from llm_orchestrator.config import Settings
    from llm_orchestrator.store.db import Database
    from llm_orchestrator.store.users import UserRepository

    async def seed() -> None:
        db = Database(database_url)
        settings = Settings()  # the suite's argon2id cost, from the environment
        passwords = Passwords(
            time_cost=settings.password_hash_time_cost,
            memory_kib=settings.password_hash_memory_kib,
            parallelism=settings.password_hash_parallelism,
        )
        await UserService(UserRepository(db), passwords).ensure_admin(
            ADMIN_USERNAME, ADMIN_PASSWORD
        )
        await db.close()

    asyncio.run(seed())
