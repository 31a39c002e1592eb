"""The SDK's retry timing and model leniency, against scripted HTTP answers.

The integration tests drive a real server (a real 429 with Retry-After, real token
refresh); these cover the header forms and limits a single server build cannot produce.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from llm_orchestrator.client import Client, RateLimited, ServerError
from llm_orchestrator.client._core import retry_delay


def scripted(*answers: httpx.Response) -> tuple[Client, list[float], list[httpx.Request]]:
    queue: Iterator[httpx.Response] = iter(answers)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return next(queue)

    client = Client("http://api.test/api/v1", api_key="k", transport=httpx.MockTransport(handler))
    slept: list[float] = []
    client._sleep = slept.append
    return client, slept, seen


def limited(headers: dict[str, str]) -> httpx.Response:
    body = {"code": "rate_limited", "message": "slow down", "details": {}, "request_id": "req-9"}
    return httpx.Response(429, json=body, headers=headers)


def health(**extra: Any) -> httpx.Response:
    return httpx.Response(200, json={"status": "healthy", "checks": {}, **extra})


def test_retry_after_is_a_floor_with_a_little_jitter() -> None:
    response = httpx.Response(429, headers={"Retry-After": "3"})
    delays = [retry_delay(response, 0) for _ in range(50)]

    assert all(3.0 <= d <= 3.3 for d in delays)
    assert len(set(delays)) > 1


def test_an_http_date_retry_after_and_a_reset_epoch_are_honoured() -> None:
    now = float(int(time.time()))
    dated = httpx.Response(
        503, headers={"Retry-After": email.utils.formatdate(now + 5, usegmt=True)}
    )
    reset = httpx.Response(429, headers={"X-RateLimit-Reset": str(int(now) + 7)})

    assert 3.9 <= retry_delay(dated, 0, now=now) <= 5.6
    assert 7.0 <= retry_delay(reset, 0, now=now) <= 7.8


def test_without_a_header_the_backoff_grows_with_full_jitter() -> None:
    assert all(0 <= retry_delay(None, 0) <= 0.5 for _ in range(20))
    assert all(0 <= retry_delay(None, 10) <= 8.0 for _ in range(20))


def test_503_is_retried_then_succeeds() -> None:
    client, slept, seen = scripted(
        httpx.Response(503, json={"code": "internal_error", "message": "db", "details": {}}),
        health(),
    )

    assert client.health().status == "healthy"
    assert len(seen) == 2 and len(slept) == 1


def test_retries_stop_at_max_retries() -> None:
    client, slept, seen = scripted(*[limited({"Retry-After": "1"})] * 4)

    with pytest.raises(RateLimited) as refused:
        client.admin.stats()

    assert len(seen) == 4 and len(slept) == 3
    assert refused.value.request_id == "req-9"
    assert refused.value.retry_after == 1


def test_a_wait_longer_than_a_minute_is_raised_not_slept() -> None:
    client, slept, seen = scripted(limited({"Retry-After": "3600"}))

    with pytest.raises(RateLimited) as refused:
        client.admin.stats()

    assert slept == [] and len(seen) == 1
    assert refused.value.retry_after == 3600


def test_a_non_json_5xx_is_a_server_error_with_its_status() -> None:
    client, _, _ = scripted(httpx.Response(502, text="<html>bad gateway</html>"))

    with pytest.raises(ServerError) as failed:
        client.admin.stats()

    assert failed.value.status == 502 and failed.value.message == "Bad Gateway"


def test_fields_a_newer_server_adds_are_kept() -> None:
    client, _, _ = scripted(health(region="eu-west-1"))

    report = client.health()

    assert report.model_extra == {"region": "eu-west-1"}
    assert report.model_dump()["region"] == "eu-west-1"
