"""The application stack: the functions, the API, orchestration permissions, events,
migrations and observability, over the data stack's network, database and secrets."""

from __future__ import annotations

from typing import Any

from aws_cdk import ArnFormat, CfnOutput, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra import constants
from infra.constants import (
    MANAGE_EXECUTIONS,
    MANAGE_TRIGGERS,
    PUBLISH_COMPLETIONS,
    READ_APP_SECRETS,
    REMOVE_TRIGGERS,
    WRITE_APP_SECRETS,
)
from infra.constructs.api import Api
from infra.constructs.functions import Functions, FunctionSources, Placement
from infra.constructs.migrations import Migrations
from infra.constructs.nag import acknowledge
from infra.constructs.observability import Observability
from infra.constructs.orchestration import Orchestration
from infra.constructs.status_events import StatusEvents
from infra.stacks.data import DataStack


class ApplicationStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        data: DataStack,
        sources: FunctionSources,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        database = data.database
        keys = data.secrets
        environment = {
            "LLMO_ENVIRONMENT": "aws",
            "LLMO_ENGINE": "stepfunctions",
            "LLMO_SECRETS_BACKEND": "aws",
            "LLMO_DATABASE_SECRET_ARN": database.secret.secret_arn,
            "LLMO_DATABASE_HOST": database.proxy.endpoint,
            "LLMO_SECRETS_KEY_ARN": keys.secrets_encryption_key.secret_arn,
            "LLMO_EVENT_BUS": constants.EVENT_BUS_NAME,
            "LLMO_SCHEDULE_GROUP": constants.SCHEDULE_GROUP_NAME,
            "LLMO_SECRETS_PREFIX": constants.APP_SECRETS_PREFIX,
        }
        self.functions = Functions(
            self,
            "Functions",
            sources=sources,
            placement=Placement(
                vpc=data.network.vpc, security_group=data.network.functions_security_group
            ),
            environment=environment,
        )
        by_name = self.functions.by_name
        self.orchestration = Orchestration(
            self,
            "Orchestration",
            runners=[by_name[name] for name in constants.RUNNERS],
            events_function=by_name["events"],
        )
        # Known only once the functions and roles exist; each goes only to the functions that
        # use it (which also keeps the references between functions acyclic).
        executions_environment = {
            "LLMO_STEP_RUNNER_ARN": by_name["step_runner"].function_arn,
            "LLMO_VECTOR_RUNNER_ARN": by_name["vector_runner"].function_arn,
            "LLMO_STATES_ROLE_ARN": self.orchestration.states_role.role_arn,
        }
        triggers_environment = {
            "LLMO_SCHEDULER_ROLE_ARN": self.orchestration.scheduler_role.role_arn,
            "LLMO_EVENTS_FUNCTION_ARN": by_name["events"].function_arn,
        }
        for name, function in by_name.items():
            if name in MANAGE_EXECUTIONS:
                for key, value in executions_environment.items():
                    function.add_environment(key, value)
            if name in MANAGE_TRIGGERS:
                for key, value in triggers_environment.items():
                    function.add_environment(key, value)
            database.secret.grant_read(function)
            keys.secrets_encryption_key.grant_read(function)
            if name in constants.API_GROUPS:
                # Only what answers HTTP signs or verifies tokens; a runner that could read
                # the key could mint an admin's token.
                function.add_environment("LLMO_JWT_SECRET_ARN", keys.jwt_signing_key.secret_arn)
                keys.jwt_signing_key.grant_read(function)

        migrate = by_name["migrate"]
        migrate.add_environment("LLMO_ADMIN_PASSWORD_ARN", keys.initial_admin_password.secret_arn)
        keys.initial_admin_password.grant_read(migrate)

        self.orchestration.grant_manage_executions(by_name[n] for n in MANAGE_EXECUTIONS)
        self.orchestration.grant_task_tokens([by_name[name] for name in constants.RUNNERS])
        self.orchestration.grant_manage_triggers(by_name[n] for n in MANAGE_TRIGGERS)
        self.orchestration.grant_remove_triggers(by_name[n] for n in REMOVE_TRIGGERS)
        for name in PUBLISH_COMPLETIONS:
            self.orchestration.event_bus.grant_put_events_to(by_name[name])
        self._grant_app_secrets(by_name)

        StatusEvents(self, "StatusEvents", events_function=by_name["events"])
        self.api = Api(self, "Api", functions=self.functions.api_functions)
        self.migrations = Migrations(
            self,
            "Migrations",
            migrate_function=by_name["migrate"],
            before=[by_name[name] for name in constants.FUNCTIONS if name != "migrate"],
        )
        self.observability = Observability(
            self,
            "Observability",
            rest_api=self.api.rest_api,
            functions=by_name,
            cluster=database.cluster,
        )
        CfnOutput(self, "ApiUrl", value=f"{self.api.url}api/v1/")
        CfnOutput(self, "DashboardName", value=self.observability.dashboard.dashboard_name)

    def _grant_app_secrets(self, by_name: dict[str, Any]) -> None:
        """The `aws` secrets backend keeps POST /admin/secrets under its own name prefix
        (``LLMO_SECRETS_PREFIX``), apart from the deployment's secrets."""
        secrets_arn = self.format_arn(
            service="secretsmanager",
            resource="secret",
            resource_name=f"{constants.APP_SECRETS_PREFIX}*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        read = ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
        write = [
            "secretsmanager:CreateSecret",
            "secretsmanager:PutSecretValue",
            "secretsmanager:RestoreSecret",
            "secretsmanager:TagResource",
        ]
        for name in sorted(set(READ_APP_SECRETS) | set(WRITE_APP_SECRETS)):
            actions = read + (write if name in WRITE_APP_SECRETS else [])
            by_name[name].add_to_role_policy(
                iam.PolicyStatement(actions=actions, resources=[secrets_arn])
            )
            acknowledge(
                by_name[name],
                "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:secretsmanager:<AWS::Region>:"
                f"<AWS::AccountId>:secret:{constants.APP_SECRETS_PREFIX}*]",
                "Provider credentials are stored at run time through POST /admin/secrets, "
                "each its own secret under our name prefix; the names are not known at deploy.",
            )
        for name in WRITE_APP_SECRETS:
            # Listing the stored names (GET /admin/config): ListSecrets has no resource-level
            # permission; the backend filters by prefix. X-Ray's * is acknowledged already.
            by_name[name].add_to_role_policy(
                iam.PolicyStatement(actions=["secretsmanager:ListSecrets"], resources=["*"])
            )
