"""EventBridge wiring into the events function: every Step Functions execution status
change of our state machines (the function reconciles the execution row from it)."""

from __future__ import annotations

from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra import constants

STATUS_CHANGE = "Step Functions Execution Status Change"


def our_state_machines() -> dict[str, list[object]]:
    """The event-pattern fragment matching our state machines only, by name prefix."""
    return {"stateMachineArn": [{"wildcard": f"*:stateMachine:{constants.STATE_MACHINE_PREFIX}*"}]}


class StatusEvents(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, events_function: lambda_.IFunction
    ) -> None:
        super().__init__(scope, construct_id)
        self.rule = events.Rule(
            self,
            "ExecutionStatusChange",
            description="Step Functions status changes of our state machines → events",
            event_pattern=events.EventPattern(
                source=["aws.states"], detail_type=[STATUS_CHANGE], detail=our_state_machines()
            ),
            targets=[targets.LambdaFunction(events_function, retry_attempts=8)],
        )
