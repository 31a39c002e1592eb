"""Password hashing: argon2id at the configured cost, never below OWASP's minimum, old hashes
still verifying after the cost changes, and no hash holding the event loop."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from llm_orchestrator.auth.passwords import Passwords
from llm_orchestrator.config import Settings

CHEAPEST = {"time_cost": 5, "memory_kib": 7168, "parallelism": 1}


async def test_a_hash_records_its_cost_and_verifies_only_its_password() -> None:
    passwords = Passwords(time_cost=2, memory_kib=19456, parallelism=1)

    stored = await passwords.hash("correct horse")

    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert await passwords.verify(stored, "correct horse")
    assert not await passwords.verify(stored, "correct horsf")
    assert not await passwords.verify("not a hash", "correct horse")


async def test_hashes_made_at_another_cost_still_verify() -> None:
    old = await Passwords(**CHEAPEST).hash("correct horse")

    assert await Passwords().verify(old, "correct horse")


async def test_an_unknown_user_verifies_against_a_decoy_and_fails() -> None:
    passwords = Passwords(**CHEAPEST)

    assert not await passwords.verify(None, "")
    assert not await passwords.verify(None, "decoy password that never matches")


def test_a_cost_below_owasps_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="OWASP"):
        Passwords(time_cost=4, memory_kib=7168, parallelism=1)
    with pytest.raises(ValidationError, match="OWASP"):
        Settings(password_hash_time_cost=1, password_hash_memory_kib=19456)
    with pytest.raises(ValidationError, match="password_hash_memory_kib"):
        Settings(password_hash_time_cost=20, password_hash_memory_kib=4096)
    assert Settings(password_hash_time_cost=2, password_hash_memory_kib=19456)


async def test_hashing_leaves_the_event_loop_free() -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    await Passwords().hash("correct horse")  # the default cost: a quarter second of CPU
    ticker.cancel()

    assert ticks > 10
