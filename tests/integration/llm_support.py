"""The API with all three providers pointed at their fakes, for the fallback, structured
output and budget tests: fixtures and helpers that create and run workflows over HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from llm_orchestrator.config import Settings
from llm_orchestrator.server import LocalServer, bootstrap, build_local_server
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.cohere_server import FakeCohere
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import Session
from tests.integration.execution_support import create_workflow, start_execution, wait_for

# Marker values: a test that greps responses, logs and state for secrets looks for these.
ANTHROPIC_KEY = "sk-ant-MARKER-a1b2c3d4e5f6"
COHERE_KEY = "co-MARKER-f6e5d4c3b2a1"
OPENAI_KEY = "sk-MARKER-openai-0a1b2c3d"
MARKERS = (ANTHROPIC_KEY, COHERE_KEY, OPENAI_KEY, "MARKER")
FAST_RETRY = {"max_attempts": 2, "backoff_seconds": 1, "backoff_rate": 1.0}


@pytest.fixture(scope="module")
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI.start(api_key=OPENAI_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def anthropic_fake() -> Iterator[FakeAnthropic]:
    with FakeAnthropic.start(api_key=ANTHROPIC_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def cohere_fake() -> Iterator[FakeCohere]:
    with FakeCohere.start(api_key=COHERE_KEY) as fake:
        yield fake


@pytest.fixture(autouse=True)
def _fresh_fakes(
    openai_fake: FakeOpenAI, anthropic_fake: FakeAnthropic, cohere_fake: FakeCohere
) -> None:
    for fake in (openai_fake, anthropic_fake, cohere_fake):
        fake.reset()


@pytest.fixture
async def server(
    settings: Settings,
    openai_fake: FakeOpenAI,
    anthropic_fake: FakeAnthropic,
    cohere_fake: FakeCohere,
) -> AsyncIterator[LocalServer]:
    environ = {
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": openai_fake.base_url,
        "ANTHROPIC_API_KEY": ANTHROPIC_KEY,
        "ANTHROPIC_BASE_URL": anthropic_fake.base_url,
        "CO_API_KEY": COHERE_KEY,
        "CO_API_URL": cohere_fake.base_url,
    }
    local = build_local_server(settings, database_url=settings.database_url, environ=environ)
    await bootstrap(local.runtime)
    try:
        yield local
    finally:
        await local.runtime.close()


def llm(step_id: str, provider: str, model: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "llm",
        "provider": provider,
        "model": model,
        "prompt": extra.pop("prompt", "Answer {{question}}"),
        "output": extra.pop("output", ["answer"]),
        "retry": extra.pop("retry", FAST_RETRY),
        **extra,
    }


def embed(step_id: str, provider: str, model: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "embed",
        "provider": provider,
        "model": model,
        "input": extra.pop("input", "{{question}}"),
        "output": extra.pop("output", ["vector"]),
        "retry": extra.pop("retry", FAST_RETRY),
        **extra,
    }


async def run(
    client: httpx.AsyncClient,
    session: Session,
    steps: list[dict[str, Any]],
    inputs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    workflow_id = await create_workflow(client, session, steps)
    execution_id = await start_execution(
        client, session, workflow_id, inputs or {"question": "why is the sky blue"}
    )
    return await wait_for(client, session, workflow_id, execution_id, timeout=60.0)


async def refused(
    client: httpx.AsyncClient, session: Session, steps: list[dict[str, Any]]
) -> dict[str, str]:
    """The field errors of a definition the API refuses: ``{field: message}``."""
    response = await client.post(
        "/workflows", headers=session.headers, json={"name": "refused", "steps": steps}
    )
    assert response.status_code == 400, response.text
    return {e["field"]: e["message"] for e in response.json()["details"]["errors"]}
