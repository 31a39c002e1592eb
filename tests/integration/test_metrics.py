"""GET /metrics: Prometheus text, database-backed counts, per-process HTTP counts, and the
same requests as CloudWatch EMF from a Lambda handler."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llm_orchestrator.api.lambda_entry import make_http_handler
from llm_orchestrator.api.routers import monitoring
from llm_orchestrator.config import Settings
from llm_orchestrator.runtime import build_runtime
from llm_orchestrator.server import LocalServer
from tests.integration.metrics_support import (
    insert_execution,
    insert_step_run,
    insert_workflow,
    scrape,
    value,
)
from tests.support import FakeLambdaContext


async def test_metrics_is_public_prometheus_text_version_0_0_4(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {
        "orchestrator_workflows",
        "orchestrator_executions",
        "orchestrator_step_duration_seconds",
        "orchestrator_provider_tokens",
        "orchestrator_http_requests",
    } <= names
    assert "# TYPE orchestrator_workflows_total counter" in response.text
    assert "# TYPE orchestrator_step_duration_seconds histogram" in response.text


async def test_an_empty_system_reports_zero_for_every_execution_status(
    client: httpx.AsyncClient,
) -> None:
    families = await scrape(client)

    assert value(families["orchestrator_workflows"], "orchestrator_workflows_total") == 0
    executions = families["orchestrator_executions"]
    for status in ("pending", "running", "paused", "completed", "failed", "cancelled"):
        assert value(executions, "orchestrator_executions_total", status=status) == 0


async def test_workflow_and_execution_counts_come_from_the_database(
    client: httpx.AsyncClient, server: LocalServer, admin: Any
) -> None:
    db = server.runtime.db
    workflows = [await insert_workflow(db, admin.user_id, f"wf-{i}") for i in range(3)]
    for status in ("completed", "completed", "failed", "running"):
        await insert_execution(db, workflows[0], admin.user_id, status)

    families = await scrape(client)

    assert value(families["orchestrator_workflows"], "orchestrator_workflows_total") == 3
    executions = families["orchestrator_executions"]
    assert value(executions, "orchestrator_executions_total", status="completed") == 2
    assert value(executions, "orchestrator_executions_total", status="failed") == 1
    assert value(executions, "orchestrator_executions_total", status="running") == 1
    assert value(executions, "orchestrator_executions_total", status="pending") == 0


async def test_counts_agree_across_instances_because_they_are_not_in_memory(
    client: httpx.AsyncClient, server: LocalServer, settings: Settings, admin: Any
) -> None:
    # Another "container": its own runtime and pool on the same database.
    other = build_runtime(settings, database_url=settings.database_url)
    try:
        workflow_id = await insert_workflow(other.db, admin.user_id)
        await insert_execution(other.db, workflow_id, admin.user_id, "completed")
    finally:
        await other.close()

    families = await scrape(client)

    assert value(families["orchestrator_workflows"], "orchestrator_workflows_total") == 1
    executions = families["orchestrator_executions"]
    assert value(executions, "orchestrator_executions_total", status="completed") == 1


async def test_step_durations_form_a_histogram_by_step_type_and_provider(
    client: httpx.AsyncClient, server: LocalServer, admin: Any
) -> None:
    db = server.runtime.db
    workflow_id = await insert_workflow(db, admin.user_id)
    execution_id = await insert_execution(db, workflow_id, admin.user_id, "completed")
    for step_id, latency in (("a", 40.0), ("b", 300.0), ("c", 2000.0)):
        await insert_step_run(db, execution_id, step_id, latency_ms=latency)
    await insert_step_run(
        db, execution_id, "search", step_type="vector_search", provider=None, latency_ms=80.0
    )
    await insert_step_run(db, execution_id, "in-flight", latency_ms=None, status="running")

    histogram = (await scrape(client))["orchestrator_step_duration_seconds"]

    llm = {"step_type": "llm", "provider": "openai"}
    bucket = "orchestrator_step_duration_seconds_bucket"
    assert value(histogram, bucket, **llm, le="0.05") == 1
    assert value(histogram, bucket, **llm, le="0.5") == 2
    assert value(histogram, bucket, **llm, le="2.5") == 3
    assert value(histogram, bucket, **llm, le="+Inf") == 3
    assert value(histogram, "orchestrator_step_duration_seconds_count", **llm) == 3
    assert value(histogram, "orchestrator_step_duration_seconds_sum", **llm) == pytest.approx(2.34)
    search = {"step_type": "vector_search", "provider": "none"}
    assert value(histogram, "orchestrator_step_duration_seconds_count", **search) == 1


async def test_provider_tokens_are_summed_by_provider_and_direction(
    client: httpx.AsyncClient, server: LocalServer, admin: Any
) -> None:
    db = server.runtime.db
    workflow_id = await insert_workflow(db, admin.user_id)
    first = await insert_execution(db, workflow_id, admin.user_id, "completed")
    second = await insert_execution(db, workflow_id, admin.user_id, "failed")
    await insert_step_run(db, first, "s", latency_ms=10, input_tokens=20, output_tokens=7)
    await insert_step_run(db, second, "s", latency_ms=10, input_tokens=10, output_tokens=5)
    await insert_step_run(
        db, second, "e", step_type="embed", provider="cohere", latency_ms=5, input_tokens=4
    )
    # A vector step records its database where a model step records its provider.
    await insert_step_run(
        db, second, "v", step_type="vector_search", provider="pgvector", latency_ms=3
    )

    tokens = (await scrape(client))["orchestrator_provider_tokens"]

    sample = "orchestrator_provider_tokens_total"
    assert value(tokens, sample, provider="openai", direction="input") == 30
    assert value(tokens, sample, provider="openai", direction="output") == 12
    assert value(tokens, sample, provider="cohere", direction="input") == 4
    assert value(tokens, sample, provider="cohere", direction="output") == 0
    assert not [row for row in tokens.samples if row.labels["provider"] == "pgvector"]


async def test_http_requests_are_counted_by_route_template_not_raw_path(
    client: httpx.AsyncClient, admin: Any
) -> None:
    for _ in range(2):
        await client.get(f"/audit/events/evt-{uuid.uuid4()}", headers=admin.headers)
    await client.get("/no/such/route")

    requests = (await scrape(client))["orchestrator_http_requests"]

    sample = "orchestrator_http_requests_total"
    assert value(requests, sample, route="/api/v1/audit/events/{event_id}", status="404") == 2
    assert value(requests, sample, route="unmatched", status="404") == 1
    assert value(requests, sample, route="/api/v1/auth/login", status="200") == 1
    assert not any("evt-" in s.labels.get("route", "") for s in requests.samples)


async def test_a_failing_request_observer_does_not_break_the_request(
    client: httpx.AsyncClient, server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[str, int]] = []

    def broken(route: str, status: int) -> None:
        raise RuntimeError("the metrics sink is down")

    server.app.state.http_metrics.subscribe(broken)
    server.app.state.http_metrics.subscribe(lambda route, status: seen.append((route, status)))

    response = await client.get("/health/live")

    assert response.status_code == 200 and response.json()["status"] == "healthy"
    # The observers after the broken one still hear of it, and the process still counts it.
    assert seen == [("/api/v1/health/live", 200)]
    requests = (await scrape(client))["orchestrator_http_requests"]
    sample = "orchestrator_http_requests_total"
    assert value(requests, sample, route="/api/v1/health/live", status="200") == 1
    assert "request metrics observer failed" in caplog.text


def test_the_lambda_handler_emits_each_request_as_emf(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    # No rate limiting: /health/live then opens no pool in the handler's own event loop.
    quiet = settings.model_copy(update={"rate_limits_enabled": False})
    handler = make_http_handler(
        "monitoring",
        [monitoring.router],
        lambda: build_runtime(quiet, database_url=quiet.database_url),
    )
    event = {
        "resource": "/{proxy+}",
        "path": "/api/v1/health/live",
        "httpMethod": "GET",
        "headers": {},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": "GET",
            "path": "/prod/api/v1/health/live",
            "stage": "prod",
            "requestId": "apigw-request-1",
            "identity": {"sourceIp": "198.51.100.4"},
        },
        "body": None,
        "isBase64Encoded": False,
    }

    response = handler(event, FakeLambdaContext())

    assert response["statusCode"] == 200
    emf = [
        json.loads(line)
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("{") and '"_aws"' in line
    ]
    assert len(emf) == 1
    record = emf[0]
    metric_names = [m["Name"] for d in record["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]]
    assert metric_names == ["HttpRequests"]
    assert record["HttpRequests"] == [1.0] or record["HttpRequests"] == 1.0
    assert record["route"] == "/api/v1/health/live"
    assert record["status"] == "200"
