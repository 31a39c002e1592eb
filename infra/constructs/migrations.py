"""Database migrations as a custom resource, applied during every deploy that changes the
code, before any API function changes.

The resource's ``CodeVersion`` property is a hash of the packaged code (migrations
included): a deploy with new code updates the resource, CloudFormation calls the
``migrate`` function, and the API functions, which depend on the resource, are updated only
after it answered SUCCESS. A failed migration fails the deploy and rolls it back.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from aws_cdk import CustomResource
from aws_cdk import aws_lambda as lambda_
from constructs import Construct, IConstruct

from infra import constants


def code_version(package: Path = constants.PACKAGE_DIR) -> str:
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(package)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class Migrations(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        migrate_function: lambda_.IFunction,
        before: list[IConstruct],
    ) -> None:
        super().__init__(scope, construct_id)
        self.resource = CustomResource(
            self,
            "Apply",
            service_token=migrate_function.function_arn,
            resource_type="Custom::LlmoMigrations",
            properties={"CodeVersion": code_version()},
        )
        for construct in before:
            construct.node.add_dependency(self.resource)
