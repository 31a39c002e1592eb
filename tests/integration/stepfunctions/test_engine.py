"""LLMO_ENGINE=stepfunctions against moto: moto's Step Functions runs the compiled state
machines and invokes our real step runner; the ``events`` handler applies the status
changes Step Functions would send through EventBridge."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from llm_orchestrator.compiler import to_json
from llm_orchestrator.engine.stepfunctions import state_machine_name
from llm_orchestrator.server import LocalServer
from tests.aws_support import (
    SFN_ROLE,
    RoutedStepRunner,
    deliver,
    moto_execution,
    moto_status,
    status_event,
)
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import Session
from tests.integration.execution_support import (
    control,
    create_workflow,
    get_status,
    launch,
    launch_held,
    llm_step,
    prompts,
    start_execution,
    wait_step,
)

CHAIN = [
    llm_step("a", "a {{x}}", "a_out"),
    llm_step("b", "b {{a_out}}", "b_out", depends_on=["a"]),
]


async def test_an_execution_runs_on_its_state_machine_named_by_the_execution_id(
    client: httpx.AsyncClient, admin: Session, sfn: Any, events: Any, fake_openai: FakeOpenAI
) -> None:
    workflow_id = await create_workflow(client, admin, CHAIN)
    served = (
        await client.get(f"/workflows/{workflow_id}/state-machine", headers=admin.headers)
    ).json()["definition"]

    execution_id = await start_execution(client, admin, workflow_id, {"x": "1"})

    [machine] = sfn.list_state_machines()["stateMachines"]
    assert machine["name"] == state_machine_name(workflow_id, served)
    described_machine = sfn.describe_state_machine(stateMachineArn=machine["stateMachineArn"])
    assert described_machine["definition"] == to_json(served)
    assert json.loads(described_machine["definition"]) == served
    assert described_machine["roleArn"] == SFN_ROLE
    described = await moto_status(sfn, execution_id, ("SUCCEEDED", "FAILED"))
    assert described["status"] == "SUCCEEDED", described
    assert json.loads(described["input"]) == {"execution_id": execution_id}
    assert prompts(fake_openai) == ["a 1", "b echo: a 1"]

    delivered = await deliver(events, status_event(described))
    again = await deliver(events, status_event(described))

    assert delivered == {"execution_id": execution_id, "outcome": "completed"}
    assert again["outcome"] == "already ended"
    final = await get_status(client, admin, workflow_id, execution_id)
    assert final["status"] == "completed"
    assert final["context"]["outputs"] == {"a_out": "echo: a 1", "b_out": "echo: b echo: a 1"}


async def test_an_edited_workflow_gets_a_new_state_machine(
    client: httpx.AsyncClient, admin: Session, sfn: Any
) -> None:
    workflow_id = await create_workflow(client, admin, CHAIN)
    await start_execution(client, admin, workflow_id, {"x": "1"})
    await start_execution(client, admin, workflow_id, {"x": "2"})
    edited = {"name": "test-workflow", "version": "1.1", "steps": CHAIN[:1]}
    assert (
        await client.put(f"/workflows/{workflow_id}", headers=admin.headers, json=edited)
    ).status_code == 200

    await start_execution(client, admin, workflow_id, {"x": "3"})

    machines = sfn.list_state_machines()["stateMachines"]
    assert len(machines) == 2
    assert all(m["name"].startswith(f"llmo-{workflow_id}-") for m in machines)


async def test_waiting_for_the_end_asks_step_functions(
    client: httpx.AsyncClient, admin: Session
) -> None:
    workflow_id = await create_workflow(client, admin, CHAIN)

    response = await client.post(
        f"/workflows/{workflow_id}/execute",
        headers=admin.headers,
        json={"inputs": {"x": "1"}, "async": False},
    )

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed"


async def test_cancel_answers_at_once_then_stops_the_step_functions_execution(
    client: httpx.AsyncClient, admin: Session, sfn: Any, events: Any, fake_openai: FakeOpenAI
) -> None:
    fake_openai.latency = 1.0
    workflow_id, execution_id = await launch(client, admin, CHAIN, {"x": "1"})
    await wait_step(client, admin, workflow_id, execution_id, "a", "running")

    cancelled = await control(client, admin, "cancel", workflow_id, execution_id)

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    # moto aborts once the step in flight returns (AWS would at once).
    described = await moto_status(sfn, execution_id, ("ABORTED", "FAILED", "SUCCEEDED"))
    assert described["status"] == "ABORTED"
    assert (await deliver(events, status_event(described)))["outcome"] == "already ended"
    final = await get_status(client, admin, workflow_id, execution_id)
    assert final["status"] == "cancelled"
    assert final["error"]["type"] == "WorkflowCancelled"


async def test_a_failing_step_ends_the_execution_once_with_the_steps_error(
    client: httpx.AsyncClient, admin: Session, sfn: Any, events: Any, fake_openai: FakeOpenAI
) -> None:
    workflow_id = await create_workflow(
        client, admin, [llm_step("only", "hi {{x}}", "reply", model="no-such-model")]
    )
    fake_openai.models = frozenset({"gpt-4"})

    response = await client.post(
        f"/workflows/{workflow_id}/execute",
        headers=admin.headers,
        json={"inputs": {"x": "1"}, "async": False},
    )

    assert response.status_code == 200, response.text
    final = response.json()
    assert final["status"] == "failed"
    # The step's own error, recorded by its failure handler, not the Fail state's name.
    assert final["error"]["type"] == "ProviderBadRequest"
    assert final["error"]["step_id"] == "only"
    assert final["steps"]["only"]["status"] == "failed"
    execution_id = final["execution_id"]
    described = await moto_status(sfn, execution_id, ("FAILED",))
    assert (await deliver(events, status_event(described)))["outcome"] == "already ended"
    audit = (
        await client.get(
            "/audit/events", headers=admin.headers, params={"resource_id": execution_id}
        )
    ).json()["events"]
    assert sorted(e["action"] for e in audit) == ["finish", "start"]


async def test_pause_parks_the_next_step_and_resume_sends_task_success(
    client: httpx.AsyncClient,
    admin: Session,
    sfn: Any,
    fake_openai: FakeOpenAI,
    step_runner: RoutedStepRunner,
) -> None:
    # Step a's call is held until the pause has landed, so b is the one that parks.
    workflow_id, execution_id = await launch_held(client, admin, fake_openai, CHAIN, {"x": "1"})

    paused = await control(client, admin, "pause", workflow_id, execution_id)
    fake_openai.release()

    assert paused.json()["status"] == "paused"
    for _ in range(1000):
        if any(p.get("action") == "park" for p in step_runner.payloads):
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("step b never parked")
    held = await get_status(client, admin, workflow_id, execution_id)
    assert held["status"] == "paused" and held["steps"]["b"]["status"] == "pending"
    assert moto_execution(sfn, execution_id)["status"] == "RUNNING"

    resumed = await control(client, admin, "resume", workflow_id, execution_id)

    assert resumed.json()["status"] == "running"
    described = await moto_status(sfn, execution_id, ("SUCCEEDED", "FAILED"))
    assert described["status"] == "SUCCEEDED"
    assert prompts(fake_openai) == ["a 1", "b echo: a 1"]
    history = sfn.get_execution_history(executionArn=described["executionArn"])["events"]
    assert any(e["type"] == "TaskSucceeded" for e in history)
    assert [p["action"] for p in step_runner.payloads] == ["run", "run", "park", "run"]


async def test_a_start_that_step_functions_refuses_fails_the_execution_readably(
    client: httpx.AsyncClient, admin: Session, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server.runtime.engine, "_role_arn", "not-a-role-arn")
    workflow_id = await create_workflow(client, admin, CHAIN)

    execution_id = await start_execution(client, admin, workflow_id, {"x": "1"})

    final = await get_status(client, admin, workflow_id, execution_id)
    assert final["status"] == "failed"
    assert final["error"]["type"] == "StartExecutionFailed"
    assert final["error"]["message"].startswith("Step Functions did not start the execution:")


async def test_restore_starts_a_new_run_and_ignores_the_old_ones_reports(
    client: httpx.AsyncClient,
    admin: Session,
    sfn: Any,
    events: Any,
    fake_openai: FakeOpenAI,
) -> None:
    workflow_id, execution_id = await launch(client, admin, CHAIN, {"x": "1"})
    first = await moto_status(sfn, execution_id, ("SUCCEEDED",))
    await deliver(events, status_event(first))
    checkpoints = (
        await client.get(
            f"/state/{workflow_id}/checkpoints",
            headers=admin.headers,
            params={"executionId": execution_id},
        )
    ).json()["checkpoints"]
    after_a = next(c["id"] for c in checkpoints if c["step_id"] == "a")

    restored = await client.post(
        f"/state/{workflow_id}/restore", headers=admin.headers, json={"checkpointId": after_a}
    )

    assert restored.status_code == 200, restored.text
    second = await moto_status(sfn, f"{execution_id}-run-2", ("SUCCEEDED",))
    assert json.loads(second["input"]) == {"execution_id": execution_id}
    stale = await deliver(events, status_event({**first, "status": "ABORTED"}))
    assert stale["outcome"] == "stale run"
    assert (await deliver(events, status_event(second)))["outcome"] == "completed"
    assert (await get_status(client, admin, workflow_id, execution_id))["status"] == "completed"
    assert prompts(fake_openai) == ["a 1", "b echo: a 1", "b echo: a 1"]


# -- status sync: what a run's ending does to an execution still active -------------------


@pytest.fixture
def idle_sfn(monkeypatch: pytest.MonkeyPatch, sfn: Any) -> None:
    """Step Functions accepts executions but runs nothing, so the tests decide the ending."""
    from moto.core.config import default_user_config

    monkeypatch.setitem(default_user_config, "stepfunctions", {"execute_state_machine": False})


@pytest.mark.parametrize(
    ("sfn_status", "error", "cause", "status", "error_type", "message"),
    [
        (
            "FAILED",
            "Lambda.Unknown",
            '{"errorMessage": "boom"}',
            "failed",
            "Lambda.Unknown",
            "boom",
        ),
        ("TIMED_OUT", None, None, "timed_out", "States.Timeout", "did not finish"),
        ("ABORTED", None, None, "cancelled", "WorkflowCancelled", "stopped in Step Functions"),
    ],
)
async def test_the_events_handler_ends_an_active_execution_as_step_functions_did(
    client: httpx.AsyncClient,
    admin: Session,
    sfn: Any,
    idle_sfn: None,
    events: Any,
    sfn_status: str,
    error: str | None,
    cause: str | None,
    status: str,
    error_type: str,
    message: str,
) -> None:
    workflow_id, execution_id = await launch(client, admin, CHAIN, {"x": "1"})
    running = moto_execution(sfn, execution_id)
    assert (await get_status(client, admin, workflow_id, execution_id))["status"] == "running"
    ended = {**running, "status": sfn_status, "error": error, "cause": cause}

    first = await deliver(events, status_event(ended))
    duplicate = await deliver(events, status_event(ended))
    late_running = await deliver(events, status_event(running))

    assert first["outcome"] == status
    assert duplicate["outcome"] == "already ended"
    assert late_running["outcome"] == "running"
    final = await get_status(client, admin, workflow_id, execution_id)
    assert final["status"] == status
    assert final["error"]["type"] == error_type
    assert message in final["error"]["message"]
    audit = (
        await client.get(
            "/audit/events", headers=admin.headers, params={"resource_id": execution_id}
        )
    ).json()["events"]
    assert [e["action"] for e in audit if e["action"] == "finish"] == ["finish"]


async def test_the_events_handler_ignores_other_state_machines_and_unknown_shapes(
    events: Any, server: LocalServer
) -> None:
    foreign = {
        "source": "aws.states",
        "detail-type": "Step Functions Execution Status Change",
        "detail": {"name": "x", "status": "FAILED", "input": '{"other": 1}'},
    }

    assert (await deliver(events, foreign))["outcome"] == "ignored"
    assert (await deliver(events, {"hello": "world"}))["outcome"] == "ignored"
    unknown = {**foreign, "detail": {**foreign["detail"], "input": '{"execution_id": "exec-x"}'}}
    assert (await deliver(events, unknown))["outcome"] == "unknown execution"
