"""Aurora PostgreSQL Serverless v2 (with pgvector) behind an RDS Proxy.

The credentials are generated into Secrets Manager; the functions read the secret at run
time and connect through the proxy, so no password or URL is ever in the template.

Why the proxy: every Lambda container keeps its own small pool, and the step runner fans
out to hundreds of concurrent containers during a large workflow. The proxy multiplexes
those onto a bounded number of database connections (Serverless v2's connection limit
scales with its ACUs) and holds client connections open through a failover.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_rds as rds
from constructs import Construct

from infra import constants
from infra.constructs.nag import acknowledge

ENGINE_VERSION = rds.AuroraPostgresEngineVersion.VER_17_4
"""A current Aurora PostgreSQL with pgvector (0.8) available through CREATE EXTENSION."""


class Database(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        security_group: ec2.ISecurityGroup,
    ) -> None:
        super().__init__(scope, construct_id)
        self.cluster = rds.DatabaseCluster(
            self,
            "Cluster",
            engine=rds.DatabaseClusterEngine.aurora_postgres(version=ENGINE_VERSION),
            writer=rds.ClusterInstance.serverless_v2("writer"),
            serverless_v2_min_capacity=constants.AURORA_MIN_ACU,
            serverless_v2_max_capacity=constants.AURORA_MAX_ACU,
            credentials=rds.Credentials.from_generated_secret(
                constants.DATABASE_ADMIN_USER, secret_name=constants.DATABASE_SECRET_NAME
            ),
            default_database_name=constants.DATABASE_NAME,
            port=constants.DATABASE_PORT,
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
            security_groups=[security_group],
            storage_encrypted=True,
            iam_authentication=True,
            deletion_protection=True,
            removal_policy=RemovalPolicy.SNAPSHOT,
            backup=rds.BackupProps(retention=Duration.days(constants.BACKUP_RETENTION_DAYS)),
            cloudwatch_logs_exports=["postgresql"],
        )
        assert self.cluster.secret is not None
        self.secret = self.cluster.secret
        self.proxy = self.cluster.add_proxy(
            "Proxy",
            secrets=[self.secret],
            vpc=vpc,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
            security_groups=[security_group],
            require_tls=True,
            debug_logging=False,
        )
        acknowledge(
            self.cluster,
            "AwsSolutions-RDS11",
            "Only the functions' security group reaches the port; a non-default port would "
            "add no protection and break every PostgreSQL tool's default.",
        )
        acknowledge(
            self.cluster,
            "AwsSolutions-SMG4",
            "The functions build their connection from this secret once per container; "
            "rotating it needs them to re-read it on an authentication failure, which the "
            "runtime does not do yet. Rotate by hand (README, Deploy to AWS).",
        )
