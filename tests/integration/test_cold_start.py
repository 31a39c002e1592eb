"""What a Lambda loads: a handler imports, and then builds, only what its group needs.

Each check runs in a fresh interpreter, as a Lambda cold start does: in this process every
module is already loaded by other tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, JWT_SECRET
from tests.integration.test_lambda_handlers import FUNCTIONS, _seed_admin, rest_event

HTTP_GROUPS = ("auth", "workflows", "executions", "state", "monitoring", "audit", "admin")
EXECUTION_MACHINERY = ("engine", "compiler", "steps", "providers")
"""Our packages that only running workflows needs (the step runner and the engines)."""

_LOADED = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("handler", {path!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
{then}
print(json.dumps(sorted(
    name for name in sys.modules
    if name.split(".")[0] in ("llm_orchestrator", "openai", "psycopg", "psycopg_pool")
)))
"""


def loaded_modules(group: str, then: str = "", env: dict[str, str] | None = None) -> set[str]:
    """Our modules (and the OpenAI SDK) loaded once ``group``'s handler is imported and
    ``then`` has run."""
    code = _LOADED.format(path=str(FUNCTIONS / group / "handler.py"), then=then)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=FUNCTIONS.parent,
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def packages(modules: set[str]) -> set[str]:
    return {name.split(".")[1] for name in modules if name.count(".") >= 1}


@pytest.mark.parametrize("group", HTTP_GROUPS)
def test_importing_an_http_handler_loads_no_execution_machinery(group: str) -> None:
    loaded = loaded_modules(group)

    assert packages(loaded) & set(EXECUTION_MACHINERY) == set()
    assert "openai" not in loaded


@pytest.mark.parametrize("group", HTTP_GROUPS)
def test_importing_an_http_handler_loads_no_database_driver(group: str) -> None:
    """psycopg loads on the first query (the pool opens lazily), not on a cold start."""
    loaded = loaded_modules(group)

    assert {"psycopg", "psycopg_pool"} & loaded == set()


def test_importing_the_step_runner_loads_no_provider_until_a_step_needs_one() -> None:
    loaded = loaded_modules("step_runner")

    assert "openai" not in loaded
    assert packages(loaded) & {"providers", "engine", "compiler"} == set()


def test_serving_a_login_builds_nothing_the_auth_group_does_not_use(
    database_url: str, data_dir: Path
) -> None:
    _seed_admin(database_url)
    env = {
        "PATH": "/usr/bin:/bin",
        "LLMO_DATABASE_URL": database_url,
        "LLMO_DATA_DIR": str(data_dir),
        "LLMO_JWT_SECRET": JWT_SECRET,
        # Outside local the audit chain's key is configured, never generated.
        "LLMO_AUDIT_HMAC_KEY": "audit-hmac-key-for-tests-" + "k" * 32,
        "LLMO_ENVIRONMENT": "test",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    event = rest_event(
        "POST", "/api/v1/auth/login", {"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
    )
    then = (
        "from tests.support import FakeLambdaContext\n"
        f"response = module.handler(json.loads({json.dumps(event)!r}), FakeLambdaContext())\n"
        "assert response['statusCode'] == 200, response\n"
        "module.handler.close()\n"
    )

    loaded = loaded_modules("auth", then, env)

    assert "llm_orchestrator.auth.service" in loaded  # it did log in
    assert packages(loaded) & set(EXECUTION_MACHINERY) == set()
    assert "openai" not in loaded


def test_the_monitoring_router_names_the_content_type_prometheus_client_writes() -> None:
    from llm_orchestrator.api.routers.monitoring import PROMETHEUS_CONTENT_TYPE
    from llm_orchestrator.metrics.prometheus import CONTENT_TYPE

    assert PROMETHEUS_CONTENT_TYPE == CONTENT_TYPE
