"""SendTaskSuccess / SendTaskFailure on AWS Step Functions, for the step-runner Lambda.

boto3 is imported on first use only, so nothing else pays for it.
"""

from __future__ import annotations

import json
from typing import Any


class StepFunctionsTaskTokens:
    def __init__(self, client: Any = None) -> None:
        self._client = client

    def _sfn(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("stepfunctions")
        return self._client

    def send_task_success(self, token: str, output: Any = None) -> None:
        self._sfn().send_task_success(taskToken=token, output=json.dumps(output or {}))

    def send_task_failure(self, token: str, error: str, cause: str = "") -> None:
        self._sfn().send_task_failure(taskToken=token, error=error, cause=cause)
