"""Step Functions and triggers: what the engine needs to create and run state machines.

The state machines themselves are created at run time by the engine (one per workflow
definition version, named under ``llmo-``); the stack provides the role they run with,
which may invoke the two runner functions and nothing else, and lets only the functions that start,
stop or create executions do so, on names under that prefix. Triggers get an EventBridge
Scheduler group and the role schedules run with (it may invoke the events function only),
and the completion events go to the app's own event bus.
"""

from __future__ import annotations

from collections.abc import Iterable

from aws_cdk import ArnFormat, CfnElement, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_scheduler as scheduler
from constructs import Construct

from infra import constants
from infra.constructs.nag import acknowledge


class Orchestration(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        runners: Iterable[lambda_.IFunction],
        events_function: lambda_.IFunction,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.states_role = iam.Role(
            self,
            "StatesRole",
            assumed_by=iam.ServicePrincipal("states.amazonaws.com"),
            description="Role of every workflow state machine: may invoke the runners only",
        )
        for runner in runners:
            runner.grant_invoke(self.states_role)
            acknowledge(
                self.states_role,
                f"AwsSolutions-IAM5[Resource::<{_logical_id(runner)}.Arn>:*]",
                "grant_invoke covers a runner's versions and aliases (ARN:*); still that one "
                "function only.",
            )

        self.event_bus = events.EventBus(
            self, "CompletionEvents", event_bus_name=constants.EVENT_BUS_NAME
        )
        self.schedule_group = scheduler.CfnScheduleGroup(
            self, "ScheduleGroup", name=constants.SCHEDULE_GROUP_NAME
        )
        self.scheduler_role = iam.Role(
            self,
            "SchedulerRole",
            assumed_by=iam.ServicePrincipal("scheduler.amazonaws.com"),
            description="Role of the trigger schedules: may invoke the events function only",
        )
        events_function.grant_invoke(self.scheduler_role)
        acknowledge(
            self.scheduler_role,
            f"AwsSolutions-IAM5[Resource::<{_logical_id(events_function)}.Arn>:*]",
            "grant_invoke covers the events function's versions and aliases (ARN:*); still "
            "the one function only.",
        )

        prefix = constants.STATE_MACHINE_PREFIX
        self.state_machines = _Wildcard(
            stack,
            "states",
            "stateMachine",
            f"{prefix}*",
            "State machines are created at run time, one per workflow version; the wildcard "
            "is limited to our name prefix.",
        )
        self.executions = _Wildcard(
            stack,
            "states",
            "execution",
            f"{prefix}*:*",
            "Executions belong to run-time state machines under our name prefix.",
        )
        self.schedules = _Wildcard(
            stack,
            "scheduler",
            "schedule",
            f"{constants.SCHEDULE_GROUP_NAME}/*",
            "Trigger schedules are created at run time, in our schedule group only.",
        )
        self.trigger_rules = _Wildcard(
            stack,
            "events",
            "rule",
            f"{constants.EVENT_BUS_NAME}/{constants.EVENT_RULE_PREFIX}*",
            "Event-pattern triggers are rules created at run time on our bus, under our "
            "prefix only.",
        )
        # Event-pattern triggers are rules on our bus, created at run time, that invoke the
        # events function; only rules under our prefix may.
        events_function.add_permission(
            "TriggerRules",
            principal=iam.ServicePrincipal("events.amazonaws.com"),
            source_arn=self.trigger_rules.arn,
        )

    def grant_manage_executions(self, functions: Iterable[lambda_.Function]) -> None:
        """Create/update state machines, start/stop/describe executions, answer task tokens:
        on names under our prefix only, and pass the states role to nothing else."""
        for function in functions:
            self.state_machines.allow(
                function,
                "states:CreateStateMachine",
                "states:UpdateStateMachine",
                "states:DescribeStateMachine",
                "states:TagResource",
                "states:StartExecution",
                "states:ListExecutions",
            )
            self.executions.allow(
                function,
                "states:DescribeExecution",
                "states:StopExecution",
                "states:GetExecutionHistory",
            )
            self.states_role.grant_pass_role(function)
            self.grant_task_tokens([function])

    def grant_task_tokens(self, functions: Iterable[lambda_.Function]) -> None:
        """SendTaskSuccess/Failure/Heartbeat: Step Functions authorizes these on no resource,
        so the statement's resource is necessarily ``*``."""
        for function in functions:
            function.add_to_role_policy(
                iam.PolicyStatement(
                    actions=[
                        "states:SendTaskSuccess",
                        "states:SendTaskFailure",
                        "states:SendTaskHeartbeat",
                    ],
                    resources=["*"],
                )
            )
            acknowledge(
                function,
                "AwsSolutions-IAM5[Resource::*]",
                "states:SendTask* support no resource-level permissions; the task token "
                "itself is the authorization (Step Functions documentation).",
            )

    def grant_manage_triggers(self, functions: Iterable[lambda_.Function]) -> None:
        """Schedules in our group and event rules on our bus, under our prefixes."""
        for function in functions:
            self.schedules.allow(
                function,
                "scheduler:CreateSchedule",
                "scheduler:UpdateSchedule",
                "scheduler:DeleteSchedule",
                "scheduler:GetSchedule",
            )
            self.trigger_rules.allow(
                function,
                "events:PutRule",
                "events:DeleteRule",
                "events:DescribeRule",
                "events:PutTargets",
                "events:RemoveTargets",
            )
            self.scheduler_role.grant_pass_role(function)

    def grant_remove_triggers(self, functions: Iterable[lambda_.Function]) -> None:
        """Delete schedules and remove rules, nothing else: the events function removes what
        a trigger left behind when it fires after its trigger was deleted or stopped."""
        for function in functions:
            self.schedules.allow(function, "scheduler:DeleteSchedule")
            self.trigger_rules.allow(function, "events:RemoveTargets", "events:DeleteRule")


class _Wildcard:
    """Names created at run time under one of our prefixes: the ARN pattern a policy grants
    on, and the cdk-nag IAM5 wildcard finding it raises, acknowledged with ``reason`` on
    every function granted."""

    def __init__(self, stack: Stack, service: str, resource: str, name: str, reason: str):
        # State machines and executions are ``…:stateMachine:name``; the others ``…/name``.
        colon = service == "states"
        self.arn = stack.format_arn(
            service=service,
            resource=resource,
            resource_name=name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME if colon else ArnFormat.SLASH_RESOURCE_NAME,
        )
        separator = ":" if colon else "/"
        self.finding = (
            f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:{service}:<AWS::Region>:"
            f"<AWS::AccountId>:{resource}{separator}{name}]"
        )
        self.reason = reason

    def allow(self, function: lambda_.Function, *actions: str) -> None:
        function.add_to_role_policy(
            iam.PolicyStatement(actions=list(actions), resources=[self.arn])
        )
        acknowledge(function, self.finding, self.reason)


def _logical_id(function: lambda_.IFunction) -> str:
    """The logical id cdk-nag uses to name a function in a finding (``<Id.Arn>``)."""
    resource = function.node.default_child
    assert isinstance(resource, CfnElement)
    return Stack.of(function).resolve(resource.logical_id)  # type: ignore[no-any-return]
