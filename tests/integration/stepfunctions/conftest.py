"""LLMO_ENGINE=stepfunctions against moto, for every test in this folder: moto's Step
Functions runs the compiled state machines and invokes our real step runner, and the
``events`` handler applies the status changes Step Functions would send through EventBridge.

``server`` here replaces the integration conftest's: ``client`` (and everything built on it)
talks to an API whose engine is Step Functions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import pytest

from llm_orchestrator.config import Settings
from llm_orchestrator.events_lambda import make_events_handler
from llm_orchestrator.runtime import build_runtime
from llm_orchestrator.server import LocalServer
from tests.aws_support import (
    EVENTS_NAME,
    SCHEDULER_ROLE,
    SFN_ROLE,
    STEP_RUNNER_NAME,
    RoutedStepRunner,
    create_function,
    route_step_runner,
)
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import fake_environ, serving
from tests.moto_support import REGION, mocked_aws


@pytest.fixture
def sfn(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with mocked_aws(monkeypatch):
        yield boto3.client("stepfunctions", region_name=REGION)


@pytest.fixture
def sfn_settings(settings: Settings, sfn: Any) -> Settings:
    return settings.model_copy(
        update={
            "engine": "stepfunctions",
            "step_runner_arn": create_function(STEP_RUNNER_NAME),
            "states_role_arn": SFN_ROLE,
            "events_function_arn": create_function(EVENTS_NAME),
            "scheduler_role_arn": SCHEDULER_ROLE,
        }
    )


@pytest.fixture
def environ(fake_openai: FakeOpenAI) -> dict[str, str]:
    return fake_environ(fake_openai)


@pytest.fixture
def step_runner(
    sfn_settings: Settings, environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[RoutedStepRunner]:
    runner = RoutedStepRunner(
        lambda: build_runtime(sfn_settings, database_url=sfn_settings.database_url, environ=environ)
    )
    route_step_runner(monkeypatch.setattr, runner)
    yield runner
    runner.close()


@pytest.fixture
async def server(
    sfn_settings: Settings, environ: dict[str, str], step_runner: RoutedStepRunner
) -> AsyncIterator[LocalServer]:
    async with serving(sfn_settings, environ=environ) as local:
        yield local


@pytest.fixture
def events(sfn_settings: Settings, environ: dict[str, str]) -> Iterator[Any]:
    """The ``events`` Lambda handler, on its own loop and pool like a Lambda container."""
    handler = make_events_handler(
        lambda: build_runtime(sfn_settings, database_url=sfn_settings.database_url, environ=environ)
    )
    yield handler
    handler.close()  # type: ignore[attr-defined]
