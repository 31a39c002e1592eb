"""The API Gateway REST API: every operation of the API, each on its group's Lambda.

The routes come from the checked-in ``openapi.json`` (generated from the app, and a test
fails when the two drift): each operation's tag names its endpoint group, and the group's
function serves exactly those paths and methods. A new endpoint is deployed by regenerating
the OpenAPI document, never by editing a list here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from aws_cdk import RemovalPolicy
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra import constants
from infra.constructs.nag import acknowledge

HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def routes_by_group(openapi: Path) -> dict[str, list[tuple[str, str]]]:
    """Group (function) name → its (METHOD, path) pairs, from the OpenAPI document."""
    document = json.loads(openapi.read_text(encoding="utf-8"))
    routes: dict[str, list[tuple[str, str]]] = {}
    for path, operations in sorted(document["paths"].items()):
        for method, operation in operations.items():
            if method not in HTTP_METHODS:
                continue
            override = constants.ROUTE_OVERRIDES.get((method.upper(), path))
            tags = operation.get("tags") or []
            groups = {constants.ROUTE_GROUPS.get(tag) for tag in tags}
            if override is None and (len(tags) != 1 or None in groups):
                raise ValueError(
                    f"{method.upper()} {path} has tags {tags}: each operation needs exactly one "
                    "tag that infra/constants.py ROUTE_GROUPS maps to a function"
                )
            group = override or groups.pop() or ""
            routes.setdefault(group, []).append((method.upper(), path))
    return routes


class Api(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        functions: Mapping[str, lambda_.IFunction],
        openapi: Path = constants.OPENAPI,
    ) -> None:
        super().__init__(scope, construct_id)
        access_logs = logs.LogGroup(
            self,
            "AccessLogs",
            retention=getattr(logs.RetentionDays, constants.LOG_RETENTION),
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.rest_api = apigateway.RestApi(
            self,
            "RestApi",
            rest_api_name=f"{constants.PREFIX}-api",
            description="LLM Orchestrator API (every path under /api/v1)",
            endpoint_types=[apigateway.EndpointType.REGIONAL],
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.DESTROY,
            deploy_options=apigateway.StageOptions(
                stage_name=constants.STAGE_NAME,
                throttling_rate_limit=constants.THROTTLE_RATE_PER_SECOND,
                throttling_burst_limit=constants.THROTTLE_BURST,
                tracing_enabled=True,
                metrics_enabled=True,
                logging_level=apigateway.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # request bodies carry passwords and prompts
                access_log_destination=apigateway.LogGroupLogDestination(access_logs),
                access_log_format=apigateway.AccessLogFormat.json_with_standard_fields(
                    caller=False,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=False,
                ),
            ),
        )
        integrations = {
            name: apigateway.LambdaIntegration(function, proxy=True, allow_test_invoke=False)
            for name, function in functions.items()
        }
        self.routes = routes_by_group(openapi)
        for group, operations in self.routes.items():
            for method, path in operations:
                resource = self.rest_api.root.resource_for_path(path)
                resource.add_method(method, integrations[group])

        acknowledge(
            self.rest_api,
            "AwsSolutions-APIG4",
            "The application authenticates every request itself (JWT bearer tokens and API "
            "keys, with per-permission checks); public endpoints (login, health) are public "
            "by the API's contract.",
        )
        acknowledge(
            self.rest_api,
            "AwsSolutions-APIG2",
            "The application validates every parameter and body and answers with field-level "
            "errors in the API's error envelope; API Gateway's validation would answer in "
            "another format.",
        )
        acknowledge(
            self.rest_api,
            "AwsSolutions-COG4",
            "Users, passwords and API keys are the application's own (see APIG4); there is "
            "no Cognito user pool.",
        )
        acknowledge(
            self.rest_api,
            "AwsSolutions-APIG3",
            "No WAF by default (it costs at rest); stage throttling and the application's "
            "per-user rate limits bound abuse. Attach a web ACL to the stage if required.",
        )
        acknowledge(
            self.rest_api,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]",
            "API Gateway's account-level logging role needs this AWS-managed policy.",
        )

    @property
    def url(self) -> str:
        return self.rest_api.url
