"""moto's Step Functions running our compiled state machines, its Lambda being our real
step-runner handler (on the test's database and fake provider), plus the EventBridge
status events AWS would send: what the Step Functions engine and ``events`` tests share.

The Lambda seam is the one ``tests/oracle_support.py`` documents: moto's
``LambdaFunction.invoke`` (the function's code) is replaced, so Step Functions' invoke,
its Retry and Catch on the error name, and task tokens all go through moto.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from typing import Any

import boto3

from llm_orchestrator.engine.stepfunctions_sync import STATUS_CHANGE_DETAIL_TYPE
from llm_orchestrator.runtime import Runtime
from llm_orchestrator.step_runner_lambda import StepRunnerLambda
from tests.moto_support import REGION
from tests.support import FakeLambdaContext

STEP_RUNNER_NAME = "llmo-step-runner"
EVENTS_NAME = "llmo-events"
SFN_ROLE = "arn:aws:iam::123456789012:role/llmo-states"
SCHEDULER_ROLE = "arn:aws:iam::123456789012:role/llmo-scheduler"


def create_function(name: str) -> str:
    iam = boto3.client("iam", region_name=REGION)
    try:
        role = iam.create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument="{}")["Role"]
    except iam.exceptions.EntityAlreadyExistsException:
        role = iam.get_role(RoleName=f"{name}-role")["Role"]
    created = boto3.client("lambda", region_name=REGION).create_function(
        FunctionName=name,
        Runtime="python3.11",
        Role=role["Arn"],
        Handler="handler.handler",
        Code={"ZipFile": b"not run: invocations are routed to our handler"},
    )
    arn: str = created["FunctionArn"]
    return arn


class RoutedStepRunner:
    """Our step-runner Lambda handler answering moto's invocations, one at a time (it owns
    one event loop, as a Lambda container does)."""

    def __init__(self, runtime_factory: Callable[[], Runtime]) -> None:
        self.handler = StepRunnerLambda(runtime_factory)
        self._lock = threading.Lock()
        self._closed = False
        self.payloads: list[dict[str, Any]] = []

    def invoke(self, body: str | bytes, response_headers: dict[str, str]) -> bytes:
        payload = json.loads(body or "{}")
        with self._lock:
            self.payloads.append(payload)
            try:
                if self._closed:
                    # moto's execution threads outlive a test that started executions and
                    # did not wait for them: the handler would build a runtime (a pool, a
                    # loop) that nothing closes. A deleted function fails instead.
                    raise RuntimeError("the step runner function is gone (its test ended)")
                answer: Any = self.handler(payload, FakeLambdaContext())
            except Exception as exc:
                response_headers["x-amz-function-error"] = "Unhandled"
                answer = {"errorMessage": str(exc), "errorType": type(exc).__name__}
        return json.dumps(answer).encode()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self.handler.close()


def route_step_runner(patch: Callable[[Any, str, Any], None], runner: RoutedStepRunner) -> None:
    """``patch`` is ``monkeypatch.setattr``; moto must be mocking already."""
    from moto.awslambda.models import LambdaFunction

    def invoke(self: LambdaFunction, body: str, request_headers: Any, response_headers: Any):
        return runner.invoke(body, response_headers)

    patch(LambdaFunction, "invoke", invoke)


def status_event(described: dict[str, Any]) -> dict[str, Any]:
    """The EventBridge event Step Functions sends for a status change, from DescribeExecution."""
    detail = {
        key: described.get(key)
        for key in ("executionArn", "stateMachineArn", "name", "status", "input", "error", "cause")
    }
    return {
        "version": "0",
        "id": f"evt-{described['name']}-{described['status']}",
        "detail-type": STATUS_CHANGE_DETAIL_TYPE,
        "source": "aws.states",
        "account": "123456789012",
        "time": "2026-01-01T00:00:00Z",
        "region": REGION,
        "resources": [described["executionArn"]],
        "detail": detail,
    }


async def deliver(events: Any, event: dict[str, Any]) -> dict[str, Any]:
    """Hand ``event`` to the ``events`` handler (on a thread: it runs its own loop)."""
    result: dict[str, Any] = await asyncio.to_thread(events, event, FakeLambdaContext())
    return result


def moto_execution(sfn: Any, name: str) -> dict[str, Any]:
    """DescribeExecution of the Step Functions execution called ``name``."""
    for machine in sfn.list_state_machines()["stateMachines"]:
        for execution in sfn.list_executions(stateMachineArn=machine["stateMachineArn"])[
            "executions"
        ]:
            if execution["name"] == name:
                described: dict[str, Any] = sfn.describe_execution(
                    executionArn=execution["executionArn"]
                )
                return described
    raise AssertionError(f"no Step Functions execution named {name}")


async def moto_status(
    sfn: Any, name: str, statuses: tuple[str, ...], timeout: float = 60.0
) -> dict[str, Any]:
    """Until the Step Functions execution ``name`` is in one of ``statuses``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        described = moto_execution(sfn, name)
        if described["status"] in statuses:
            return described
        assert asyncio.get_running_loop().time() < deadline, described["status"]
        await asyncio.sleep(0.05)
