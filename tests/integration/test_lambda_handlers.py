"""Each endpoint group's Lambda handler, driven by an API Gateway REST proxy event."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.conftest import ADMIN_PASSWORD, ADMIN_USERNAME
from tests.integration.lambda_support import FUNCTIONS, load_handler, rest_event, seed_admin
from tests.support import FakeLambdaContext


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
    seed_admin(database_url)
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


WORKFLOW_ID = "00000000-0000-4000-8000-000000000000"

# One API Gateway request per endpoint group, each answered by that group's own router: a
# status and a body only that route gives (an unknown route would be 404 "not_found").
HTTP_CASES: dict[str, tuple[str, str, Any, int, Callable[[dict[str, Any]], bool]]] = {
    "admin": ("GET", "/api/v1/admin/config", None, 200, lambda b: b["environment"] == "test"),
    "audit": (
        "GET",
        "/api/v1/audit/events?event_type=authentication",
        None,
        200,
        lambda b: b["events"][0]["action"] == "Login",
    ),
    "auth": ("GET", "/api/v1/auth/keys", None, 200, lambda b: b["keys"] == []),
    "executions": (
        "GET",
        f"/api/v1/workflows/{WORKFLOW_ID}/status",
        None,
        400,
        lambda b: b["details"]["errors"][0]["field"] == "executionId",
    ),
    "monitoring": ("GET", "/api/v1/health/ready", None, 200, lambda b: b["status"] == "healthy"),
    "state": (
        "GET",
        f"/api/v1/state/{WORKFLOW_ID}/checkpoints",
        None,
        400,
        lambda b: b["details"]["errors"][0]["field"] == "executionId",
    ),
    "workflows": (
        "POST",
        "/api/v1/workflows",
        {"name": "from-lambda", "steps": []},
        400,
        lambda b: b["code"] == "validation_error",
    ),
}
RUNNERS = ("step_runner", "vector_runner")
"""One handler code, two bundles: vector steps' Tasks invoke the vector runner."""
EVENTS = "events"
OWN_TESTS = {"migrate"}  # tests/integration/test_migrate_lambda.py


def test_every_handler_has_a_case_below() -> None:
    groups = {path.parent.name for path in FUNCTIONS.glob("*/handler.py")}
    assert groups == set(HTTP_CASES) | {*RUNNERS, EVENTS} | OWN_TESTS, (
        "each functions/<group>/handler.py needs a case in HTTP_CASES (or its own test)"
    )


@pytest.mark.parametrize("group", sorted(HTTP_CASES))
def test_each_http_handler_serves_its_own_group(
    lambda_env: None, database_url: str, group: str
) -> None:
    seed_admin(database_url)
    login = load_handler("auth").handler(
        rest_event(
            "POST", "/api/v1/auth/login", {"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD}
        ),
        FakeLambdaContext(),
    )
    token = json.loads(login["body"])["access_token"]
    method, path, body, status, check = HTTP_CASES[group]
    event = rest_event(method, path.split("?")[0], body, {"Authorization": f"Bearer {token}"})
    if "?" in path:
        query = dict(pair.split("=") for pair in path.split("?")[1].split("&"))
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}

    response = load_handler(group).handler(event, FakeLambdaContext())

    assert response["statusCode"] == status, response["body"]
    assert check(json.loads(response["body"])), response["body"]


@pytest.mark.parametrize("runner", RUNNERS)
def test_each_runner_handler_reads_the_database(lambda_env: None, runner: str) -> None:
    from llm_orchestrator.steps.errors import ExecutionNotFound

    handler = load_handler(runner).handler
    payload = {"action": "run", "execution_id": "exec-nowhere", "step_id": "a"}

    # A Task for an execution the database does not hold: the runner looked and said so, by
    # an error name the state machine can route on.
    with pytest.raises(ExecutionNotFound) as caught:
        handler(payload, FakeLambdaContext())

    assert "exec-nowhere" in str(caught.value)


def test_the_events_handler_reads_the_database(lambda_env: None) -> None:
    handler = load_handler(EVENTS).handler
    status_change = {
        "id": "evt-1",
        "source": "aws.states",
        "detail-type": "Step Functions Execution Status Change",
        "detail": {
            "name": "exec-nowhere",
            "status": "FAILED",
            "input": '{"execution_id": "exec-nowhere"}',
        },
    }

    # A status change of an execution the database does not hold: looked up, left alone.
    result = handler(status_change, FakeLambdaContext())

    assert result == {"execution_id": "exec-nowhere", "outcome": "unknown execution"}
