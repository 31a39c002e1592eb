"""Alarms (to an SNS topic) and one dashboard.

Alarms: API 5xx; errors and throttles of every function; failed, timed-out or aborted
workflow executions; Aurora running near its maximum capacity. The state machines are
created at run time, so their failures are counted by an EventBridge rule matching their
failed status events (its ``MatchedEvents`` metric) rather than from per-machine metrics.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_events as events
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_rds as rds
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra import constants
from infra.constructs.status_events import STATUS_CHANGE, our_state_machines

FAILED_STATUSES = ["FAILED", "TIMED_OUT", "ABORTED"]


class Observability(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        rest_api: apigateway.RestApi,
        functions: Mapping[str, lambda_.Function],
        cluster: rds.IDatabaseCluster,
    ) -> None:
        super().__init__(scope, construct_id)
        period = Duration.minutes(constants.ALARM_PERIOD_MINUTES)
        self.topic = sns.Topic(
            self,
            "Alarms",
            display_name=f"{constants.PREFIX} alarms",
            enforce_ssl=True,
            master_key=kms.Alias.from_alias_name(self, "SnsKey", "alias/aws/sns"),
        )
        self.alarms: list[cloudwatch.Alarm] = []

        def alarm(name: str, metric: cloudwatch.IMetric, threshold: float, what: str) -> None:
            created = cloudwatch.Alarm(
                self,
                name,
                metric=metric,
                threshold=threshold,
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                alarm_description=what,
            )
            created.add_alarm_action(actions.SnsAction(self.topic))
            self.alarms.append(created)

        api_5xx = rest_api.metric_server_error(period=period, statistic="Sum")
        alarm("Api5xx", api_5xx, 5, "API Gateway answered 5xx at least 5 times in 5 minutes")
        for name, function in functions.items():
            errors = function.metric_errors(period=period, statistic="Sum")
            throttles = function.metric_throttles(period=period, statistic="Sum")
            alarm(f"{name}-errors", errors, 1, f"the {name} function failed")
            alarm(f"{name}-throttles", throttles, 1, f"the {name} function was throttled")

        failed_rule = events.Rule(
            self,
            "ExecutionFailed",
            description="Failed, timed-out or aborted executions of our state machines",
            event_pattern=events.EventPattern(
                source=["aws.states"],
                detail_type=[STATUS_CHANGE],
                detail={**our_state_machines(), "status": FAILED_STATUSES},
            ),
        )
        failures = cloudwatch.Metric(
            namespace="AWS/Events",
            metric_name="MatchedEvents",
            dimensions_map={"RuleName": failed_rule.rule_name},
            period=period,
            statistic="Sum",
        )
        alarm("ExecutionsFailed", failures, 1, "a workflow execution failed, timed out or aborted")

        capacity = cluster.metric_serverless_database_capacity(period=period, statistic="Maximum")
        near_max = constants.AURORA_MAX_ACU * constants.AURORA_CAPACITY_ALARM_FRACTION
        alarm("AuroraCapacity", capacity, near_max, "Aurora is near its maximum capacity (ACUs)")

        self.dashboard = cloudwatch.Dashboard(
            self, "Dashboard", dashboard_name=f"{constants.PREFIX}-overview"
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="API requests and errors",
                left=[
                    rest_api.metric_count(period=period, statistic="Sum"),
                    rest_api.metric_client_error(period=period, statistic="Sum"),
                    api_5xx,
                ],
                right=[rest_api.metric_latency(period=period, statistic="p99")],
            ),
            cloudwatch.GraphWidget(
                title="Function errors",
                left=[f.metric_errors(period=period, label=n) for n, f in functions.items()],
            ),
            cloudwatch.GraphWidget(
                title="Function duration p99",
                left=[
                    f.metric_duration(period=period, statistic="p99", label=n)
                    for n, f in functions.items()
                ],
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Executions failed", left=[failures]),
            cloudwatch.GraphWidget(title="Aurora capacity (ACU)", left=[capacity]),
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms)),
        )
