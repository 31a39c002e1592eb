"""How ``executions.wait`` learns whether a server honours the long-poll ``wait`` parameter.

The real server holds the call (tests/integration/test_long_poll.py); older or other
servers may ignore or refuse ``wait``. These play each kind over ``httpx.MockTransport``.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from llm_orchestrator.client import Client


def status_body(status: str) -> dict[str, Any]:
    return {
        "id": "exec-1",
        "workflow_id": "wf",
        "status": status,
        "context": {"inputs": {}, "outputs": {}},
        "steps": {"a": {"status": "completed" if status == "completed" else "running"}},
    }


def client_for(handler: Any) -> tuple[Client, list[float]]:
    client = Client("http://api.test/api/v1", api_key="k", transport=httpx.MockTransport(handler))
    slept: list[float] = []
    client._sleep = slept.append
    return client, slept


def test_a_server_that_holds_the_call_is_long_polled_without_sleeping() -> None:
    waits: list[str | None] = []

    def holding_server(request: httpx.Request) -> httpx.Response:
        wait = request.url.params.get("wait")
        waits.append(wait)
        if wait is None:
            return httpx.Response(200, json=status_body("running"))
        time.sleep(float(wait) / 2)  # held until the execution ends
        return httpx.Response(200, json=status_body("completed"))

    client, slept = client_for(holding_server)

    final = client.executions.wait("wf", "exec-1", timeout=4)

    assert final.status == "completed"
    assert waits == [None, "3"]
    assert client._long_poll is True
    assert slept == [0.2]


def test_a_server_that_ignores_wait_is_polled_with_backoff() -> None:
    answers = iter(["running", "running", "running", "running", "completed"])
    waits: list[str | None] = []

    def ignoring_server(request: httpx.Request) -> httpx.Response:
        waits.append(request.url.params.get("wait"))
        return httpx.Response(200, json=status_body(next(answers)))

    client, slept = client_for(ignoring_server)

    final = client.executions.wait("wf", "exec-1")

    assert final.status == "completed"
    assert waits == [None, "20", None, None, None]
    assert client._long_poll is False
    assert slept == pytest.approx([0.2, 0.3, 0.45, 0.675])


def test_a_server_that_refuses_wait_is_polled() -> None:
    answers = iter(["running", "running", "completed"])

    def strict_server(request: httpx.Request) -> httpx.Response:
        if "wait" in request.url.params:
            error = {"field": "wait", "message": "Unknown query parameter"}
            body = {
                "code": "validation_error",
                "message": "Invalid query",
                "details": {"errors": [error]},
                "request_id": "req-1",
            }
            return httpx.Response(400, json=body)
        return httpx.Response(200, json=status_body(next(answers)))

    client, _ = client_for(strict_server)

    assert client.executions.wait("wf", "exec-1").status == "completed"
    assert client._long_poll is False
