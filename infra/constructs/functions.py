"""Every Lambda of the app, made by one ``make_function`` so that runtime, architecture,
memory, timeout, tracing, log retention, Powertools settings and VPC placement cannot drift
between them; and the two dependency layers (``make layers``) they share by kind."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aws_cdk import Annotations, Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra import constants
from infra.constructs.nag import acknowledge
from layers.bundles import BUNDLE_EXTRAS, kind_of

RUNTIME = lambda_.Runtime(f"python{constants.PYTHON_VERSION}", lambda_.RuntimeFamily.PYTHON)


@dataclass(frozen=True)
class Placement:
    vpc: ec2.IVpc
    security_group: ec2.ISecurityGroup


@dataclass
class FunctionSources:
    """Where the code and the dependency bundles come from (tests point these at small
    placeholder directories: they check the wiring, not the bundles)."""

    functions_dir: Path = constants.FUNCTIONS_DIR
    layers_dir: Path = constants.LAYERS_DIR
    missing_layers: list[str] = field(default_factory=list)

    def layer_dir(self, kind: str) -> Path:
        built = self.layers_dir / kind
        if (built / "python").is_dir():
            return built
        self.missing_layers.append(kind)
        return constants.PLACEHOLDER_LAYER_DIR

    missing_functions: list[str] = field(default_factory=list)

    def function_dir(self, name: str) -> Path:
        directory = self.functions_dir / name
        if (directory / "handler.py").is_file():
            return directory
        self.missing_functions.append(name)
        return constants.PLACEHOLDER_FUNCTION_DIR


def make_function(
    scope: Construct,
    name: str,
    *,
    code: Path,
    layer: lambda_.ILayerVersion,
    placement: Placement,
    environment: Mapping[str, str],
    description: str,
) -> lambda_.Function:
    """The one way this app makes a Lambda."""
    log_group = logs.LogGroup(
        scope,
        f"{name}-logs",
        retention=getattr(logs.RetentionDays, constants.LOG_RETENTION),
        removal_policy=RemovalPolicy.DESTROY,
    )
    timeout = constants.TIMEOUT_SECONDS.get(name, constants.API_TIMEOUT_SECONDS)
    function = lambda_.Function(
        scope,
        name,
        description=description,
        runtime=RUNTIME,
        architecture=lambda_.Architecture.ARM_64,
        handler="handler.handler",
        code=lambda_.Code.from_asset(str(code), exclude=["__pycache__", "*.pyc"]),
        layers=[layer],
        memory_size=constants.MEMORY_MB.get(name, constants.DEFAULT_MEMORY_MB),
        timeout=Duration.seconds(timeout),
        tracing=lambda_.Tracing.ACTIVE,
        log_group=log_group,
        vpc=placement.vpc,
        vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
        security_groups=[placement.security_group],
        environment={
            "POWERTOOLS_SERVICE_NAME": name,
            "POWERTOOLS_METRICS_NAMESPACE": constants.POWERTOOLS_NAMESPACE,
            "POWERTOOLS_LOG_LEVEL": "INFO",
            "POWERTOOLS_TRACER_CAPTURE_RESPONSE": "false",
            **environment,
        },
    )
    return function


class Functions(Construct):
    """The eleven functions: one per API group, the step and vector runners, events and
    migrate."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        sources: FunctionSources,
        placement: Placement,
        environment: Mapping[str, str],
    ) -> None:
        super().__init__(scope, construct_id)
        self.layers: dict[str, lambda_.LayerVersion] = {}
        for kind, extras in BUNDLE_EXTRAS.items():
            self.layers[kind] = lambda_.LayerVersion(
                self,
                f"{kind}-dependencies",
                code=lambda_.Code.from_asset(str(sources.layer_dir(kind))),
                compatible_runtimes=[RUNTIME],
                compatible_architectures=[lambda_.Architecture.ARM_64],
                description=f"llm_orchestrator and its dependencies (extras {', '.join(extras)})",
            )
        self.by_name: dict[str, lambda_.Function] = {}
        for name in constants.FUNCTIONS:
            self.by_name[name] = make_function(
                self,
                name,
                code=sources.function_dir(name),
                layer=self.layers[kind_of(name)],
                placement=placement,
                environment=environment,
                description=_DESCRIPTIONS.get(name, f"/api/v1 {name} endpoints"),
            )
        if sources.missing_layers:
            self._warn(
                "llmo:layers-missing",
                f"layers not built ({', '.join(sorted(set(sources.missing_layers)))}): this "
                "template carries placeholder layers. Run `make layers` before `cdk deploy`.",
            )
        if sources.missing_functions:
            self._warn(
                "llmo:functions-missing",
                f"no handler for {', '.join(sources.missing_functions)} in functions/: "
                "those functions carry a placeholder that refuses every invocation.",
            )
        acknowledge(
            self,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray's PutTraceSegments/PutTelemetryRecords (active tracing), Step Functions' "
            "SendTask* and Secrets Manager's ListSecrets support no resource-level permissions.",
        )
        acknowledge(
            self,
            "AwsSolutions-L1",
            f"Pinned to Python {constants.PYTHON_VERSION}: the dependency bundles are built for "
            "exactly this version (layers/bundles.py); move both together.",
        )
        acknowledge(
            self,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole]",
            "The AWS-managed VPC access policy is the documented minimum for a Lambda in a VPC "
            "(network interfaces); it grants nothing on our data.",
        )
        acknowledge(
            self,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
            "The AWS-managed basic execution policy only lets a function write its own logs.",
        )

    def _warn(self, warning_id: str, message: str) -> None:
        Annotations.of(self).add_warning_v2(warning_id, message)
        print(f"warning: {message}", file=sys.stderr)

    @property
    def api_functions(self) -> dict[str, lambda_.Function]:
        return {name: self.by_name[name] for name in constants.API_GROUPS}


_DESCRIPTIONS = {
    "step_runner": "Runs one workflow step; invoked by the state machines",
    "vector_runner": "Runs one vector_upsert or vector_search step; invoked by the state machines",
    "events": "Step Functions status changes, schedules and event rules",
    "migrate": "Custom resource: applies database migrations on every deploy",
}
