"""What a counted request's ``X-RateLimit-*`` headers say: the window with the smallest
share left, reset at that window's end; over a limit, a refusal naming the window that
blocks. The counts come from the database (``rate_limit_hit``), so here they are given."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from llm_orchestrator.errors import RateLimited
from llm_orchestrator.ratelimit.limiter import DEFAULT_TIERS, RateLimiter, TierLimits

NOW = datetime(2026, 11, 30, 22, 14, 35, 250_000, tzinfo=UTC)
MINUTE_END = int(datetime(2026, 11, 30, 22, 15, tzinfo=UTC).timestamp())
HOUR_END = int(datetime(2026, 11, 30, 23, 0, tzinfo=UTC).timestamp())
DAY_END = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp())


class _NoRepository:
    async def purge_before(self, *_: Any, **__: Any) -> None:
        raise AssertionError("no purge expected")


def _limiter() -> RateLimiter:
    tiers = {**DEFAULT_TIERS, "tiny": TierLimits(2, 2, 2)}
    return RateLimiter(_NoRepository(), tiers, lambda: NOW)  # type: ignore[arg-type]


def _headers(tier: str, hits: list[int]) -> dict[str, str]:
    limiter = _limiter()
    charge = asyncio.run(limiter.prepare())
    return limiter.settle(charge, tier, hits).headers()


def test_a_charge_counts_in_the_windows_that_contain_now() -> None:
    charge = asyncio.run(_limiter().prepare())
    assert charge.params() == {
        "rl_start_0": MINUTE_END - 60,
        "rl_start_1": HOUR_END - 3600,
        "rl_start_2": DAY_END - 86400,
    }
    assert charge.starts[0] == datetime(2026, 11, 30, 22, 14, tzinfo=UTC)


@pytest.mark.parametrize(
    ("tier", "hits", "expected"),
    [
        ("free", [1, 1, 1], ("60", "59", MINUTE_END)),
        ("free", [5, 999, 5], ("1000", "1", HOUR_END)),
        ("free", [5, 6, 9_999], ("10000", "1", DAY_END)),
        ("free", [60, 60, 60], ("60", "0", MINUTE_END)),
        ("pro", [300, 300, 300], ("600", "300", MINUTE_END)),
        # A tier the limits do not know counts as the default tier.
        ("unknown", [30, 1, 1], ("60", "30", MINUTE_END)),
        # Equal shares left: the first window, as listed (minute, hour, day).
        ("tiny", [1, 1, 1], ("2", "1", MINUTE_END)),
    ],
)
def test_the_headers_name_the_window_with_the_smallest_share_left(
    tier: str, hits: list[int], expected: tuple[str, str, int]
) -> None:
    limit, remaining, reset = expected
    assert _headers(tier, hits) == {
        "X-RateLimit-Limit": limit,
        "X-RateLimit-Remaining": remaining,
        "X-RateLimit-Reset": str(reset),
    }


def test_over_a_limit_the_request_is_refused_until_the_blocking_window_ends() -> None:
    with pytest.raises(RateLimited) as refused:
        _headers("free", [61, 61, 61])
    assert refused.value.headers["X-RateLimit-Limit"] == "60"
    assert refused.value.headers["X-RateLimit-Remaining"] == "0"
    assert refused.value.headers["Retry-After"] == str(MINUTE_END - int(NOW.timestamp()))
    with pytest.raises(RateLimited) as by_the_day:
        _headers("free", [3, 3, 10_001])
    assert by_the_day.value.headers["X-RateLimit-Reset"] == str(DAY_END)
