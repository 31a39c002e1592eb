"""The step-runner Lambda handler runs a Step Functions task payload against the database."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from llm_orchestrator.config import Settings
from llm_orchestrator.runtime import build_runtime
from llm_orchestrator.step_runner_lambda import make_step_runner_handler
from llm_orchestrator.steps.errors import WorkflowPaused
from llm_orchestrator.store.executions import ExecutionRepository
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import JWT_SECRET
from tests.support import FakeLambdaContext, admin_principal, stored_execution

DEFINITION = {
    "name": "w",
    "steps": [
        {
            "id": "a",
            "type": "llm",
            "provider": "openai",
            "model": "gpt-4",
            "prompt": "hi {{x}}",
            "output": ["out"],
        }
    ],
}


class NoTokens:
    def send_task_success(self, token: str, output: Any = None) -> None:
        raise AssertionError("no token expected")

    def send_task_failure(self, token: str, error: str, cause: str = "") -> None:
        raise AssertionError("no token expected")


def _seed(settings: Settings, *, paused: bool) -> str:
    async def seed() -> str:
        runtime = build_runtime(settings, environ={})
        try:
            admin = await admin_principal(runtime, "admin", "admin-password-x")
            execution_id = await stored_execution(
                runtime, admin.user_id, DEFINITION, timeout_seconds=60
            )
            if paused:
                await ExecutionRepository(runtime.db).request_pause(execution_id)
            return execution_id
        finally:
            await runtime.close()

    return asyncio.run(seed())


@pytest.fixture
def settings(database_url: str, data_dir: Path) -> Settings:
    return Settings(database_url=database_url, data_dir=data_dir, jwt_secret=JWT_SECRET)


def emf_documents(output: str) -> list[dict[str, Any]]:
    documents = []
    for line in output.splitlines():
        with contextlib.suppress(ValueError):
            document = json.loads(line)
            if isinstance(document, dict) and "_aws" in document:
                documents.append(document)
    return documents


def test_step_runner_handler_runs_a_step_once(
    settings: Settings, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    execution_id = _seed(settings, paused=False)
    with FakeOpenAI.start(api_key="sk-lambda") as fake:
        environ = {"OPENAI_API_KEY": "sk-lambda", "OPENAI_BASE_URL": fake.base_url}
        handler = make_step_runner_handler(
            lambda: build_runtime(settings, environ=environ), NoTokens()
        )
        payload = {"action": "run", "execution_id": execution_id, "step_id": "a", "attempt": 0}

        try:
            first = handler(payload, FakeLambdaContext())
            again = handler(payload, FakeLambdaContext())
        finally:
            handler.close()

        assert first["reused"] is False and first["step_type"] == "llm"
        assert first["usage"]["output_tokens"] > 0
        assert again == {"step_id": "a", "status": "completed", "reused": True}
        assert len(fake.requests_to("/v1/chat/completions")) == 1
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT status, outputs FROM step_runs WHERE execution_id = %s", (execution_id,)
        ).fetchone()
    assert row == ("completed", {"out": "echo: hi there"})
    # One step ran: its duration and tokens went out as CloudWatch EMF, once.
    emitted = [d for d in emf_documents(capsys.readouterr().out) if "StepDuration" in d]
    assert len(emitted) == 1
    assert emitted[0]["step_type"] == "llm" and emitted[0]["provider"] == "openai"
    assert emitted[0]["ProviderTokensOutput"] == [first["usage"]["output_tokens"]]


def test_step_runner_handler_raises_workflow_paused_by_name(settings: Settings) -> None:
    execution_id = _seed(settings, paused=True)
    handler = make_step_runner_handler(lambda: build_runtime(settings, environ={}), NoTokens())

    try:
        with pytest.raises(WorkflowPaused):
            handler(
                {"action": "run", "execution_id": execution_id, "step_id": "a"},
                FakeLambdaContext(),
            )
    finally:
        handler.close()
