"""The `migrate` custom resource against a real PostgreSQL, answering CloudFormation over
real HTTP (a loopback server stands in for the pre-signed S3 URL)."""

from __future__ import annotations

import importlib.util
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from llm_orchestrator.config import Settings
from llm_orchestrator.migrate_lambda import make_migrate_handler
from llm_orchestrator.secrets import generate_key
from llm_orchestrator.store.migrate import _LOCK_ID, migration_files


@dataclass
class Context:
    remaining_ms: int = 300_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


class CloudFormationEndpoint:
    """Records the PUT bodies sent to it, as S3 would accept them."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers["Content-Length"])
                endpoint.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/signed?x=1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def cloudformation() -> Iterator[CloudFormationEndpoint]:
    endpoint = CloudFormationEndpoint()
    yield endpoint
    endpoint.server.shutdown()


@pytest.fixture
def empty_database(pg_server_url: str) -> Iterator[str]:
    name = f"llmo_m_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    yield make_conninfo(pg_server_url, dbname=name)
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


def event(request_type: str, url: str) -> dict[str, Any]:
    return {
        "RequestType": request_type,
        "ResponseURL": url,
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/LlmoApp/1",
        "RequestId": "req-1",
        "LogicalResourceId": "MigrationsApply",
        "ResourceProperties": {"CodeVersion": "abc"},
    }


def settings_for(url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": url,
        "environment": "aws",
        "jwt_secret": "j" * 64,
        "secrets_key": generate_key(),
        "admin_password": "first-admin-password-1",
    }
    return Settings(**(values | overrides))


def test_create_applies_every_migration_creates_the_admin_and_answers_success(
    empty_database: str, cloudformation: CloudFormationEndpoint
):
    handler = make_migrate_handler(settings_factory=lambda: settings_for(empty_database))

    handler(event("Create", cloudformation.url), Context())

    [body] = cloudformation.bodies
    assert body["Status"] == "SUCCESS"
    assert body["RequestId"] == "req-1" and body["LogicalResourceId"] == "MigrationsApply"
    names = [name for name, _ in migration_files()]
    assert body["Data"]["Applied"].split(",") == names
    with psycopg.connect(empty_database) as conn:
        recorded = [row[0] for row in conn.execute("SELECT name FROM schema_migrations")]
    assert sorted(recorded) == names
    with psycopg.connect(empty_database) as conn:
        admins = conn.execute("SELECT username FROM users WHERE 'admin' = ANY(roles)").fetchall()
    assert admins == [("admin",)]
    assert body["Reason"] == f"{len(names)} migration(s) applied and the bootstrap admin created"


def test_an_update_with_nothing_pending_applies_nothing_and_keeps_the_admin(
    database_url: str, cloudformation: CloudFormationEndpoint
):
    handler = make_migrate_handler(settings_factory=lambda: settings_for(database_url))

    handler(event("Update", cloudformation.url) | {"PhysicalResourceId": "kept"}, Context())
    handler(event("Update", cloudformation.url) | {"PhysicalResourceId": "kept"}, Context())

    first, body = cloudformation.bodies
    assert first["Reason"] == "0 migration(s) applied and the bootstrap admin created"
    assert body["Status"] == "SUCCESS"
    assert body["PhysicalResourceId"] == "kept"
    assert body["Reason"] == "0 migration(s) applied"


def test_delete_leaves_the_database_alone(cloudformation: CloudFormationEndpoint):
    def no_settings() -> Settings:
        raise AssertionError("a Delete must not connect to the database")

    make_migrate_handler(settings_factory=no_settings)(
        event("Delete", cloudformation.url), Context()
    )

    assert cloudformation.bodies[0]["Status"] == "SUCCESS"


def test_the_deployed_handler_module_answers_a_delete(cloudformation: CloudFormationEndpoint):
    """functions/migrate/handler.py itself, as Lambda loads it."""
    path = Path(__file__).resolve().parents[2] / "functions" / "migrate" / "handler.py"
    spec = importlib.util.spec_from_file_location("migrate_handler", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    module.handler(event("Delete", cloudformation.url), Context())

    assert cloudformation.bodies[0]["Status"] == "SUCCESS"
    assert cloudformation.bodies[0]["PhysicalResourceId"] == "llmo-database-migrations"


def test_a_failure_answers_failed_without_the_password(
    pg_server_url: str, cloudformation: CloudFormationEndpoint
):
    unreachable = "postgresql://llmo_admin:s3cret-Pa55word@127.0.0.1:1/llmo?connect_timeout=2"
    handler = make_migrate_handler(settings_factory=lambda: settings_for(unreachable))

    handler(event("Create", cloudformation.url), Context())

    [body] = cloudformation.bodies
    assert body["Status"] == "FAILED"
    assert body["Reason"].startswith("migrations failed: OperationalError")
    assert "s3cret-Pa55word" not in json.dumps(body)


def test_migrations_that_cannot_finish_in_time_answer_failed_before_the_timeout(
    empty_database: str, cloudformation: CloudFormationEndpoint
):
    """Another migrator holds the lock: the handler answers while it still can."""
    with psycopg.connect(empty_database, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        handler = make_migrate_handler(settings_factory=lambda: settings_for(empty_database))

        handler(event("Create", cloudformation.url), Context(remaining_ms=16_000))

        [body] = cloudformation.bodies
        assert body["Status"] == "FAILED"
        assert body["Reason"] == "migrations did not finish in time"
        holder.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
