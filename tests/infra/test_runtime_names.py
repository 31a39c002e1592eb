"""What the runtime creates and calls on AWS falls under what the stack grants.

Every name here comes from the runtime's own code (the engine's state machine and run
names, the trigger ids and rule names, the secrets store's prefix, the settings the
functions read), never from ``infra/constants.py``: a rename on either side fails here.
"""

from __future__ import annotations

import json
import uuid
from fnmatch import fnmatchcase
from typing import Any

import pytest

from infra import constants
from infra.constants import MANAGE_EXECUTIONS, MANAGE_TRIGGERS, REMOVE_TRIGGERS
from llm_orchestrator import ids
from llm_orchestrator.compiler import compile_workflow
from llm_orchestrator.config import Settings
from llm_orchestrator.engine.stepfunctions import execution_arn, state_machine_name
from llm_orchestrator.engine.stepfunctions_sync import run_name
from llm_orchestrator.triggers.eventbridge import rule_name
from llm_orchestrator.workflows.validation import parse_definition
from tests.infra.conftest import Synthesized

pytestmark = pytest.mark.xdist_group("infra")

APP = constants.APP_STACK
REGION, ACCOUNT = "eu-west-1", "123456789012"
PSEUDO = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT}


def render(value: Any) -> str:
    """A CloudFormation value as text: pseudo parameters filled in, a reference to another
    resource as ``<LogicalId>`` (what IAM would see as that resource's ARN)."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return PSEUDO.get(value["Ref"], f"<{value['Ref']}>")
    if "Fn::GetAtt" in value:
        return f"<{value['Fn::GetAtt'][0]}>"
    if "Fn::ImportValue" in value:
        return f"<import {value['Fn::ImportValue']}>"
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(render(part) for part in parts)
    raise AssertionError(f"cannot render {value!r}")


def _function(synthesized: Synthesized, name: str) -> dict[str, Any]:
    logical_id = synthesized.functions()[name]
    return synthesized.templates[APP]["Resources"][logical_id]  # type: ignore[no-any-return]


def environment(synthesized: Synthesized, name: str) -> dict[str, str]:
    variables = _function(synthesized, name)["Properties"]["Environment"]["Variables"]
    return {key: render(value) for key, value in variables.items()}


def allows(synthesized: Synthesized, name: str, action: str, arn: str) -> bool:
    """Whether function ``name``'s role has ``action`` on ``arn`` (IAM wildcards)."""
    role = _function(synthesized, name)["Properties"]["Role"]["Fn::GetAtt"][0]
    for policy in synthesized.resources(APP, "AWS::IAM::Policy").values():
        if {"Ref": role} not in policy["Properties"].get("Roles", []):
            continue
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"]
            actions = actions if isinstance(actions, list) else [actions]
            resources = statement["Resource"]
            resources = resources if isinstance(resources, list) else [resources]
            if action in actions and any(fnmatchcase(arn, render(r)) for r in resources):
                return True
    return False


def _names(synthesized: Synthesized) -> dict[str, str]:
    return {f"<{logical_id}>": name for name, logical_id in synthesized.functions().items()}


def _machine_arn() -> str:
    definition = parse_definition(
        {"name": "wf", "steps": [{"id": "a", "type": "llm", "provider": "openai"} | _LLM]}
    )
    asl = compile_workflow(definition, step_runner_arn="arn:aws:lambda:::function:x")
    name = state_machine_name(uuid.uuid4(), asl)
    return f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{name}"


_LLM = {"model": "m", "prompt": "hi"}


def test_every_llmo_variable_the_stack_sets_is_a_setting_the_runtime_reads(
    synthesized: Synthesized,
):
    fields = set(Settings.model_fields)
    for name in constants.FUNCTIONS:
        for key in environment(synthesized, name):
            if key.startswith("LLMO_"):
                assert key.removeprefix("LLMO_").lower() in fields, (name, key)


def test_the_functions_that_start_runs_may_create_start_and_stop_the_engines_names(
    synthesized: Synthesized,
):
    machine = _machine_arn()
    execution = execution_arn(machine, run_name(ids.execution_id(), 2))
    by_id = _names(synthesized)
    for name in MANAGE_EXECUTIONS:
        env = environment(synthesized, name)
        assert by_id[env["LLMO_STEP_RUNNER_ARN"]] == "step_runner", name
        assert by_id[env["LLMO_VECTOR_RUNNER_ARN"]] == "vector_runner", name
        for action in ("states:CreateStateMachine", "states:StartExecution"):
            assert allows(synthesized, name, action, machine), (name, action)
        for action in ("states:StopExecution", "states:DescribeExecution"):
            assert allows(synthesized, name, action, execution), (name, action)
        # The states role, and only it, may be handed to the machines it creates.
        assert allows(synthesized, name, "iam:PassRole", env["LLMO_STATES_ROLE_ARN"]), name
        assert not allows(synthesized, name, "iam:PassRole", "<AnyOtherRole>"), name
    assert not allows(synthesized, "auth", "states:StartExecution", machine)


def test_status_changes_of_the_engines_machines_reach_the_events_function(
    synthesized: Synthesized,
):
    [rule] = [
        r
        for r in synthesized.resources(APP, "AWS::Events::Rule").values()
        if r["Properties"].get("EventPattern", {}).get("source") == ["aws.states"]
        and synthesized.functions()["events"] in json.dumps(r["Properties"].get("Targets"))
    ]
    [matcher] = rule["Properties"]["EventPattern"]["detail"]["stateMachineArn"]

    assert fnmatchcase(_machine_arn(), matcher["wildcard"])


def test_completion_events_go_to_the_bus_the_functions_are_told_and_may_write(
    synthesized: Synthesized,
):
    [(bus_id, bus)] = synthesized.resources(APP, "AWS::Events::EventBus").items()
    for name in (*MANAGE_EXECUTIONS, *constants.RUNNERS):
        assert environment(synthesized, name)["LLMO_EVENT_BUS"] == bus["Properties"]["Name"]
        assert allows(synthesized, name, "events:PutEvents", f"<{bus_id}>"), name


def test_trigger_schedules_and_rules_are_created_where_the_grants_allow(
    synthesized: Synthesized,
):
    trigger = ids.trigger_id()
    [group] = synthesized.resources(APP, "AWS::Scheduler::ScheduleGroup").values()
    [(role_id, _)] = [
        (logical_id, role)
        for logical_id, role in synthesized.resources(APP, "AWS::IAM::Role").items()
        if "scheduler.amazonaws.com" in json.dumps(role["Properties"]["AssumeRolePolicyDocument"])
    ]
    by_id = _names(synthesized)
    for name in MANAGE_TRIGGERS:
        env = environment(synthesized, name)
        assert env["LLMO_SCHEDULE_GROUP"] == group["Properties"]["Name"]
        assert env["LLMO_SCHEDULER_ROLE_ARN"] == f"<{role_id}>"
        assert by_id[env["LLMO_EVENTS_FUNCTION_ARN"]] == "events"
        schedule = (
            f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/{env['LLMO_SCHEDULE_GROUP']}/{trigger}"
        )
        rule = (
            f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{env['LLMO_EVENT_BUS']}/{rule_name(trigger)}"
        )
        for action in ("scheduler:CreateSchedule", "scheduler:DeleteSchedule"):
            assert allows(synthesized, name, action, schedule), (name, action)
        for action in ("events:PutRule", "events:PutTargets", "events:DeleteRule"):
            assert allows(synthesized, name, action, rule), (name, action)
        assert allows(synthesized, name, "iam:PassRole", env["LLMO_SCHEDULER_ROLE_ARN"])
        assert not allows(synthesized, name, "events:PutRule", rule.replace(trigger, "x"))


def test_the_events_function_may_remove_what_a_gone_trigger_left_and_no_more(
    synthesized: Synthesized,
):
    trigger = ids.trigger_id()
    env = environment(synthesized, "events")
    schedule = (
        f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/{env['LLMO_SCHEDULE_GROUP']}/{trigger}"
    )
    rule = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{env['LLMO_EVENT_BUS']}/{rule_name(trigger)}"

    for name in REMOVE_TRIGGERS:
        assert allows(synthesized, name, "scheduler:DeleteSchedule", schedule)
        assert allows(synthesized, name, "events:RemoveTargets", rule)
        assert allows(synthesized, name, "events:DeleteRule", rule)
        assert not allows(synthesized, name, "events:PutRule", rule)
        assert not allows(synthesized, name, "scheduler:CreateSchedule", schedule)


def test_event_rules_the_runtime_creates_may_invoke_the_events_function(
    synthesized: Synthesized,
):
    events_function = synthesized.functions()["events"]
    bus = environment(synthesized, "workflows")["LLMO_EVENT_BUS"]
    rule = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{bus}/{rule_name(ids.trigger_id())}"

    sources = [
        render(p["Properties"]["SourceArn"])
        for p in synthesized.resources(APP, "AWS::Lambda::Permission").values()
        if p["Properties"]["Principal"] == "events.amazonaws.com"
        and p["Properties"]["FunctionName"] == {"Fn::GetAtt": [events_function, "Arn"]}
    ]
    assert any(fnmatchcase(rule, source) for source in sources), sources


def test_secrets_stored_through_the_api_are_readable_where_they_are_used(
    synthesized: Synthesized,
):
    prefix = environment(synthesized, "admin")["LLMO_SECRETS_PREFIX"]
    assert Settings(secrets_prefix=prefix).secrets_prefix == prefix
    # Secrets Manager appends six random characters to a secret's name in its ARN.
    arn = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{prefix}QDRANT_API_KEY-AbCdEf"

    for action in ("secretsmanager:CreateSecret", "secretsmanager:PutSecretValue"):
        assert allows(synthesized, "admin", action, arn), action
    for name in constants.RUNNERS:
        assert environment(synthesized, name)["LLMO_SECRETS_PREFIX"] == prefix
        assert allows(synthesized, name, "secretsmanager:GetSecretValue", arn), name
        assert not allows(synthesized, name, "secretsmanager:PutSecretValue", arn), name


def test_only_the_functions_answering_http_are_told_of_and_may_read_the_jwt_key(
    synthesized: Synthesized,
):
    jwt_key = environment(synthesized, constants.API_GROUPS[0])["LLMO_JWT_SECRET_ARN"]
    for name in constants.FUNCTIONS:
        answers_http = name in constants.API_GROUPS
        env = environment(synthesized, name)
        assert (env.get("LLMO_JWT_SECRET_ARN") == jwt_key) is answers_http, name
        assert allows(synthesized, name, "secretsmanager:GetSecretValue", jwt_key) is (
            answers_http
        ), name
