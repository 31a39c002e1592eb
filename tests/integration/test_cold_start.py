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
from tests.integration.lambda_support import FUNCTIONS, rest_event, seed_admin

HTTP_GROUPS = ("auth", "workflows", "executions", "state", "monitoring", "audit", "admin")
HANDLERS = sorted(path.parent.name for path in FUNCTIONS.glob("*/handler.py"))
"""Every Lambda handler; all but the step runner are cold-started below."""
EXECUTION_MACHINERY = ("engine", "compiler", "steps", "providers")
"""Our packages that only running workflows needs (the step runner and the engines)."""
PROVIDER_SDKS = ("openai", "anthropic", "cohere")
VECTOR_SDKS = ("pgvector", "qdrant_client", "pinecone", "weaviate", "grpc", "numpy")
DATABASE_DRIVER = ("psycopg", "psycopg_pool")

_LOADED = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("handler", {path!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
{then}
print(json.dumps(sorted(sys.modules)))
"""


def loaded_modules(group: str, then: str = "", env: dict[str, str] | None = None) -> set[str]:
    """Every module loaded once ``group``'s handler is imported and ``then`` has run, in a
    fresh interpreter: an SDK pulled in by any path shows up, not only a direct import."""
    code = _LOADED.format(path=str(FUNCTIONS / group / "handler.py"), then=then)
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env=env,
        cwd=FUNCTIONS.parent,
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def packages(modules: set[str]) -> set[str]:
    """Our subpackages among ``modules`` (``engine`` for ``llm_orchestrator.engine.local``)."""
    return {
        name.split(".")[1]
        for name in modules
        if name.startswith("llm_orchestrator.") and name.count(".") >= 1
    }


def top_level(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def test_every_handler_but_the_step_runner_is_cold_started_here() -> None:
    assert set(HTTP_GROUPS) < set(HANDLERS) and "step_runner" in HANDLERS


@pytest.mark.parametrize("group", [h for h in HANDLERS if h != "step_runner"])
def test_importing_a_handler_loads_no_sdk_and_an_http_one_no_execution_machinery(
    group: str,
) -> None:
    """One fresh interpreter per handler, as one Lambda cold start: no provider or vector
    SDK (nor gRPC) for any of them; for an HTTP group, none of the execution machinery and
    no database driver either (psycopg loads on the first query: the pool opens lazily)."""
    loaded = loaded_modules(group)

    assert "llm_orchestrator" in top_level(loaded)  # the check saw the handler's imports
    assert top_level(loaded) & {*PROVIDER_SDKS, *VECTOR_SDKS} == set()
    if group in HTTP_GROUPS:
        assert packages(loaded) & set(EXECUTION_MACHINERY) == set()
        assert top_level(loaded) & set(DATABASE_DRIVER) == set()


def test_importing_the_step_runner_loads_no_provider_until_a_step_needs_one() -> None:
    loaded = loaded_modules("step_runner")

    assert "openai" not in top_level(loaded)
    assert packages(loaded) & {"providers", "engine", "compiler"} == set()


def test_the_step_runner_imports_an_sdk_only_when_a_step_uses_it() -> None:
    then = (
        "import llm_orchestrator.providers as p\n"
        "r = p.ProviderRegistry(p.EnvCredentialResolver({}))\n"
        "r.llm('anthropic'); r.llm('cohere'); r.embedding('cohere'); r.llm('openai')\n"
    )

    loaded = loaded_modules("step_runner", then)

    assert "llm_orchestrator.providers" in loaded
    assert top_level(loaded) & {*PROVIDER_SDKS, *VECTOR_SDKS} == set()


def test_serving_a_login_builds_nothing_the_auth_group_does_not_use(
    database_url: str, data_dir: Path
) -> None:
    seed_admin(database_url)
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
    assert "openai" not in top_level(loaded)


def test_the_monitoring_router_names_the_content_type_prometheus_client_writes() -> None:
    from llm_orchestrator.api.routers.monitoring import PROMETHEUS_CONTENT_TYPE
    from llm_orchestrator.metrics.prometheus import CONTENT_TYPE

    assert PROMETHEUS_CONTENT_TYPE == CONTENT_TYPE
