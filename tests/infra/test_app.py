"""The synthesized CloudFormation templates: what `cdk deploy` would create."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest

from infra import constants
from tests.infra.conftest import Synthesized

pytestmark = pytest.mark.xdist_group("infra")

APP = constants.APP_STACK
DATA = constants.DATA_STACK
SPEC = constants.ROOT.parent / "shared" / "spec" / "api-reference.md"
"""The API contract, beside a checkout of the team's workspace; absent from a plain clone."""
SPEC_HEADING = re.compile(r"^#### (GET|POST|PUT|DELETE|PATCH) (\S+)$", re.M)
DOCUMENTED_OPERATIONS = """
POST /auth/login · POST /auth/refresh · POST /auth/keys · GET /auth/keys
DELETE /auth/keys/{keyId} · POST /workflows · GET /workflows · GET /workflows/{workflowId}
PUT /workflows/{workflowId} · DELETE /workflows/{workflowId}
POST /workflows/{workflowId}/execute · GET /workflows/{workflowId}/status
POST /workflows/{workflowId}/pause · POST /workflows/{workflowId}/resume
POST /workflows/{workflowId}/cancel · GET /state/{workflowId}
GET /state/{workflowId}/checkpoints · POST /state/{workflowId}/checkpoints
POST /state/{workflowId}/restore · GET /health · GET /health/ready · GET /health/live
GET /metrics · GET /audit/events · GET /audit/events/{eventId} · GET /admin/users
POST /admin/users · GET /admin/stats · POST /admin/secrets · GET /admin/config
"""
"""Every operation the API reference documents (its ``#### METHOD /path`` headings), kept
here so that a clone without the reference still checks the routing; the next test keeps
the two equal wherever the reference is present."""


def _documented() -> set[tuple[str, str]]:
    operations = set()
    for item in re.split(r"·|\n", DOCUMENTED_OPERATIONS):
        if item.strip():
            method, path = item.split()
            operations.add((method, path))
    return operations


def _statements(synthesized: Synthesized, role_logical_id: str) -> list[dict[str, Any]]:
    statements = []
    for policy in synthesized.resources(APP, "AWS::IAM::Policy").values():
        roles = policy["Properties"].get("Roles", [])
        if {"Ref": role_logical_id} in roles:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def _role_assumed_by(synthesized: Synthesized, service: str) -> str:
    [logical_id] = [
        logical_id
        for logical_id, role in synthesized.resources(APP, "AWS::IAM::Role").items()
        if role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"].get(
            "Service"
        )
        == service
    ]
    return logical_id


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _route_table(synthesized: Synthesized) -> dict[tuple[str, str], str]:
    """(METHOD, path) → the function (by name) its integration invokes."""
    template = synthesized.templates[APP]["Resources"]
    by_logical_id = {v: k for k, v in synthesized.functions().items()}
    [api_id] = synthesized.resources(APP, "AWS::ApiGateway::RestApi")

    def path_of(resource_ref: Any) -> str:
        if resource_ref == {"Fn::GetAtt": [api_id, "RootResourceId"]}:
            return ""
        resource = template[resource_ref["Ref"]]["Properties"]
        return f"{path_of(resource['ParentId'])}/{resource['PathPart']}"

    table = {}
    for method in synthesized.resources(APP, "AWS::ApiGateway::Method").values():
        properties = method["Properties"]
        uri = json.dumps(properties["Integration"]["Uri"])
        [target] = [name for logical_id, name in by_logical_id.items() if logical_id in uri]
        table[(properties["HttpMethod"], path_of(properties["ResourceId"]))] = target
    return table


def test_eleven_functions_share_one_configuration(synthesized: Synthesized):
    functions = synthesized.resources(APP, "AWS::Lambda::Function")
    template = synthesized.templates[APP]["Resources"]

    assert sorted(synthesized.functions()) == sorted(constants.FUNCTIONS)
    assert len(functions) == 11
    for logical_id, function in functions.items():
        properties = function["Properties"]
        assert properties["Runtime"] == f"python{constants.PYTHON_VERSION}", logical_id
        assert properties["Architectures"] == ["arm64"]
        assert properties["TracingConfig"] == {"Mode": "Active"}
        assert properties["Handler"] == "handler.handler"
        assert len(properties["Layers"]) == 1
        assert properties["VpcConfig"]["SubnetIds"]
        log_group = template[properties["LoggingConfig"]["LogGroup"]["Ref"]]
        assert log_group["Properties"]["RetentionInDays"] == 30
        assert properties["Environment"]["Variables"]["POWERTOOLS_SERVICE_NAME"]


def test_api_functions_get_the_api_bundle_and_each_runner_its_own(synthesized: Synthesized):
    functions = synthesized.resources(APP, "AWS::Lambda::Function")
    layer_of = {
        name: json.dumps(functions[logical_id]["Properties"]["Layers"])
        for name, logical_id in synthesized.functions().items()
    }

    assert len({layer_of["step_runner"], layer_of["vector_runner"], layer_of["auth"]}) == 3
    others = {layer_of[name] for name in constants.FUNCTIONS if name not in constants.RUNNERS}
    assert others == {layer_of["auth"]}


def test_each_group_function_serves_exactly_its_operations(synthesized: Synthesized):
    openapi = json.loads(constants.OPENAPI.read_text())
    expected = {
        (method.upper(), path): constants.ROUTE_OVERRIDES.get(
            (method.upper(), path), constants.ROUTE_GROUPS[operation["tags"][0]]
        )
        for path, operations in openapi["paths"].items()
        for method, operation in operations.items()
    }

    assert _route_table(synthesized) == expected


def _routers_mounted_by(handler: Path) -> list[Any]:
    """The router objects a handler passes to make_http_handler (read from its source)."""
    import importlib

    tree = ast.parse(handler.read_text())
    [call] = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "make_http_handler"
    ]
    routers = []
    for element in call.args[1].elts:  # type: ignore[attr-defined]
        module = importlib.import_module(f"llm_orchestrator.api.routers.{element.value.id}")
        routers.append(getattr(module, element.attr))
    return routers


def test_api_gateway_sends_each_operation_to_the_function_whose_app_serves_it(
    synthesized: Synthesized,
):
    served = {}
    for group in constants.API_GROUPS:
        for router in _routers_mounted_by(constants.FUNCTIONS_DIR / group / "handler.py"):
            for route in router.routes:
                for method in route.methods:
                    served[(method, constants.API_PREFIX + route.path)] = group

    assert _route_table(synthesized) == served


def test_every_path_of_the_api_reference_is_routed(synthesized: Synthesized):
    def shape(path: str) -> str:
        return re.sub(r"\{[^}]+\}", "{}", path)

    documented = {(method, shape(constants.API_PREFIX + path)) for method, path in _documented()}
    routed = {(method, shape(path)) for method, path in _route_table(synthesized)}

    assert len(documented) == 30
    assert documented <= routed


@pytest.mark.skipif(
    not SPEC.is_file(), reason="the API reference is not beside this checkout (a plain clone)"
)
def test_the_operations_kept_here_are_the_api_references():
    assert set(SPEC_HEADING.findall(SPEC.read_text(encoding="utf-8"))) == _documented()


def test_the_api_stage_is_throttled_traced_and_logged(synthesized: Synthesized):
    [stage] = synthesized.resources(APP, "AWS::ApiGateway::Stage").values()
    properties = stage["Properties"]

    assert properties["StageName"] == constants.STAGE_NAME
    assert properties["TracingEnabled"] is True
    assert properties["AccessLogSetting"]["DestinationArn"]
    [settings] = properties["MethodSettings"]
    assert settings["ThrottlingRateLimit"] == constants.THROTTLE_RATE_PER_SECOND
    assert settings["ThrottlingBurstLimit"] == constants.THROTTLE_BURST
    assert settings["DataTraceEnabled"] is False


def test_the_state_machine_role_may_invoke_the_two_runners_and_nothing_else(
    synthesized: Synthesized,
):
    role = _role_assumed_by(synthesized, "states.amazonaws.com")
    by_name = synthesized.functions()
    runners = {by_name[name] for name in constants.RUNNERS}

    statements = _statements(synthesized, role)

    invoked = set()
    for statement in statements:
        assert statement["Action"] == "lambda:InvokeFunction"
        for resource in _as_list(statement["Resource"]):
            [target] = [i for i in by_name.values() if i in json.dumps(resource)]
            invoked.add(target)
    assert invoked == runners


def test_only_the_functions_that_run_executions_may_start_them(synthesized: Synthesized):
    functions = synthesized.resources(APP, "AWS::Lambda::Function")
    allowed = set()
    for name, logical_id in synthesized.functions().items():
        role = functions[logical_id]["Properties"]["Role"]["Fn::GetAtt"][0]
        for statement in _statements(synthesized, role):
            if "states:StartExecution" in _as_list(statement["Action"]):
                allowed.add(name)
                assert ":stateMachine:llmo-*" in json.dumps(statement["Resource"])

    assert allowed == {"workflows", "executions", "state", "events"}


def test_aurora_is_serverless_v2_encrypted_and_private(synthesized: Synthesized):
    [cluster] = synthesized.resources(DATA, "AWS::RDS::DBCluster").values()
    [instance] = synthesized.resources(DATA, "AWS::RDS::DBInstance").values()
    [subnet_group] = synthesized.resources(DATA, "AWS::RDS::DBSubnetGroup").values()
    template = synthesized.templates[DATA]["Resources"]

    assert cluster["Properties"]["Engine"] == "aurora-postgresql"
    assert cluster["Properties"]["StorageEncrypted"] is True
    assert cluster["Properties"]["ServerlessV2ScalingConfiguration"] == {
        "MinCapacity": constants.AURORA_MIN_ACU,
        "MaxCapacity": constants.AURORA_MAX_ACU,
    }
    assert instance["Properties"]["DBInstanceClass"] == "db.serverless"
    assert instance["Properties"].get("PubliclyAccessible") is not True
    for subnet in subnet_group["Properties"]["SubnetIds"]:
        path = template[subnet["Ref"]]["Metadata"]["aws:cdk:path"]
        assert "/databaseSubnet" in path
    assert synthesized.resources(DATA, "AWS::RDS::DBProxy")


def test_the_database_jwt_and_encryption_keys_are_generated_secrets(synthesized: Synthesized):
    secrets = synthesized.resources(DATA, "AWS::SecretsManager::Secret").values()
    names = {secret["Properties"]["Name"] for secret in secrets}

    assert names == {
        constants.DATABASE_SECRET_NAME,
        constants.JWT_SECRET_NAME,
        constants.SECRETS_KEY_NAME,
        constants.ADMIN_PASSWORD_NAME,
    }
    for secret in secrets:
        assert "SecretString" not in secret["Properties"]
        assert "GenerateSecretString" in secret["Properties"]


def test_no_secret_value_or_database_url_is_in_any_template(synthesized: Synthesized):
    text = json.dumps(synthesized.templates)
    functions = synthesized.resources(APP, "AWS::Lambda::Function").values()

    assert "postgresql://" not in text
    assert "postgres://" not in text
    for function in functions:
        variables = function["Properties"]["Environment"]["Variables"]
        assert not {"LLMO_DATABASE_URL", "LLMO_JWT_SECRET", "LLMO_SECRETS_KEY"} & set(variables)
        assert variables["LLMO_ENGINE"] == "stepfunctions"
        assert variables["LLMO_SECRETS_BACKEND"] == "aws"
        for name in ("LLMO_DATABASE_SECRET_ARN", "LLMO_JWT_SECRET_ARN", "LLMO_SECRETS_KEY_ARN"):
            if name in variables:
                assert isinstance(variables[name], dict), name  # a reference, never a literal


def test_status_changes_reach_the_events_function(synthesized: Synthesized):
    events_function = synthesized.functions()["events"]
    rules = synthesized.resources(APP, "AWS::Events::Rule").values()

    [rule] = [r for r in rules if r["Properties"].get("Targets")]
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.states"]
    assert pattern["detail-type"] == ["Step Functions Execution Status Change"]
    assert events_function in json.dumps(rule["Properties"]["Targets"])


def test_triggers_have_a_schedule_group_a_scheduler_role_and_an_event_bus(
    synthesized: Synthesized,
):
    role = _role_assumed_by(synthesized, "scheduler.amazonaws.com")
    [group] = synthesized.resources(APP, "AWS::Scheduler::ScheduleGroup").values()
    [bus] = synthesized.resources(APP, "AWS::Events::EventBus").values()

    assert group["Properties"]["Name"] == constants.SCHEDULE_GROUP_NAME
    assert bus["Properties"]["Name"] == constants.EVENT_BUS_NAME
    for statement in _statements(synthesized, role):
        assert statement["Action"] == "lambda:InvokeFunction"
        assert synthesized.functions()["events"] in json.dumps(statement["Resource"])


def test_migrations_run_before_every_other_function_changes(synthesized: Synthesized):
    [(migrations_id, migrations)] = synthesized.resources(APP, "Custom::LlmoMigrations").items()
    functions = synthesized.resources(APP, "AWS::Lambda::Function")
    by_name = synthesized.functions()

    assert by_name["migrate"] in json.dumps(migrations["Properties"]["ServiceToken"])
    assert migrations["Properties"]["CodeVersion"]
    for name, logical_id in by_name.items():
        if name != "migrate":
            assert migrations_id in functions[logical_id].get("DependsOn", []), name


def test_alarms_cover_api_errors_functions_executions_and_aurora(synthesized: Synthesized):
    alarms = synthesized.resources(APP, "AWS::CloudWatch::Alarm").values()
    metrics = [(a["Properties"]["Namespace"], a["Properties"]["MetricName"]) for a in alarms]

    assert ("AWS/ApiGateway", "5XXError") in metrics
    assert metrics.count(("AWS/Lambda", "Errors")) == len(constants.FUNCTIONS)
    assert metrics.count(("AWS/Lambda", "Throttles")) == len(constants.FUNCTIONS)
    assert ("AWS/Events", "MatchedEvents") in metrics
    assert ("AWS/RDS", "ServerlessDatabaseCapacity") in metrics
    assert all(a["Properties"]["AlarmActions"] for a in alarms)
    assert synthesized.resources(APP, "AWS::CloudWatch::Dashboard")


def test_cdk_nag_and_template_validation_report_nothing_unacknowledged(
    synthesized: Synthesized,
):
    """Synthesis raises on an error-level finding; warnings land in the report. cdk-nag
    writes what was acknowledged into the templates, each with its reason."""
    report = json.loads((synthesized.outdir / "validation-report.json").read_text())
    acknowledged = [
        rule
        for template in synthesized.templates.values()
        for resource in template["Resources"].values()
        for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])
    ]

    violations = [v for p in report["pluginReports"] for v in p["violations"]]
    # Annotations are in the report too (@aws-cdk/core:annotationsInValidationReport): this
    # synth has no layers built, and says so; nothing else may be there.
    assert [v["ruleName"] for v in violations] == ["Annotation::llmo:layers-missing"]
    assert violations[0]["severity"] == "warning"
    assert {rule["id"].split("[")[0] for rule in acknowledged} >= {
        "AwsSolutions-IAM5",
        "AwsSolutions-APIG4",
        "AwsSolutions-SMG4",
    }
    assert all(len(rule["reason"]) > 40 for rule in acknowledged)
