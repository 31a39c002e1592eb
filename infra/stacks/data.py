"""The stateful stack: network, database and secrets. The application stack can be
redeployed (or destroyed and recreated) without touching any data."""

from __future__ import annotations

from typing import Any

from aws_cdk import Stack
from constructs import Construct

from infra.constructs.app_secrets import AppSecrets
from infra.constructs.database import Database
from infra.constructs.network import Network


class DataStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.network = Network(self, "Network")
        self.database = Database(
            self,
            "Database",
            vpc=self.network.vpc,
            security_group=self.network.database_security_group,
        )
        self.secrets = AppSecrets(self, "Secrets")
