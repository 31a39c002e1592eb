"""The VPC: public subnets for the NAT gateway, private subnets with egress for the Lambdas
(providers and AWS APIs are reached through the NAT), isolated subnets for the database."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra import constants


class Network(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=1,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC),
                ec2.SubnetConfiguration(
                    name="functions", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS
                ),
                ec2.SubnetConfiguration(
                    name="database", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED
                ),
            ],
        )
        flow_logs = logs.LogGroup(
            self,
            "FlowLogs",
            retention=getattr(logs.RetentionDays, constants.LOG_RETENTION),
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.vpc.add_flow_log(
            "FlowLog", destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs)
        )
        self.functions_security_group = ec2.SecurityGroup(
            self,
            "Functions",
            vpc=self.vpc,
            description=f"{constants.PREFIX} Lambda functions",
            allow_all_outbound=True,
        )
        self.database_security_group = ec2.SecurityGroup(
            self,
            "Database",
            vpc=self.vpc,
            description=f"{constants.PREFIX} database and its proxy: reachable from the functions",
            allow_all_outbound=False,
        )
        self.database_security_group.add_ingress_rule(
            self.functions_security_group,
            ec2.Port.tcp(constants.DATABASE_PORT),
            "PostgreSQL from the Lambda functions",
        )
        self.database_security_group.add_ingress_rule(
            self.database_security_group,
            ec2.Port.tcp(constants.DATABASE_PORT),
            "PostgreSQL from the RDS Proxy to the cluster",
        )
