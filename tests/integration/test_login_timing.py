"""An unknown user and a wrong password fail alike, in body and in time, at the product's
default argon2id cost (the rest of the suite hashes at the cheapest cost it allows, which
would leave too little time between the two paths to tell a skipped verification apart)."""

from __future__ import annotations

import statistics
import time

import pytest

from llm_orchestrator.config import Settings
from tests.integration.conftest import ADMIN_USERNAME


@pytest.fixture
def settings(settings: Settings) -> Settings:
    defaults = {
        name: Settings.model_fields[name].default
        for name in (
            "password_hash_time_cost",
            "password_hash_memory_kib",
            "password_hash_parallelism",
        )
    }
    return settings.model_copy(update=defaults)


async def test_unknown_user_and_wrong_password_fail_identically(client):
    async def attempt(username: str, password: str):
        started = time.perf_counter()
        response = await client.post(
            "/auth/login", json={"username": username, "password": password}
        )
        return response, time.perf_counter() - started

    wrong, _ = await attempt(ADMIN_USERNAME, "not-the-password")
    unknown, _ = await attempt("nobody-here", "not-the-password")  # also builds the decoy hash

    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["message"] == unknown.json()["message"]
    assert wrong.json()["code"] == unknown.json()["code"] == "unauthorized"

    # Both paths run one argon2 verification. Single samples are noise on a loaded machine:
    # interleave several, compare medians, and allow a generous ratio. Skipping the
    # verification for unknown users makes them an order of magnitude faster.
    wrong_times, unknown_times = [], []
    for _ in range(7):
        wrong_times.append((await attempt(ADMIN_USERNAME, "not-the-password"))[1])
        unknown_times.append((await attempt("nobody-here", "not-the-password"))[1])
    wrong_median, unknown_median = statistics.median(wrong_times), statistics.median(unknown_times)
    assert wrong_median / 3 < unknown_median < wrong_median * 3, (wrong_times, unknown_times)
