"""Per-subject fixed-window rate limits (minute, hour, day) by tier."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from llm_orchestrator.errors import RateLimited
from llm_orchestrator.store.rate_limits import RateCharge, RateTable, evaluate

if TYPE_CHECKING:
    from llm_orchestrator.store.rate_limits import RateLimitRepository, WindowCount

WINDOWS: tuple[tuple[str, timedelta, str], ...] = (
    ("minute", timedelta(minutes=1), "1 minute"),
    ("hour", timedelta(hours=1), "1 hour"),
    ("day", timedelta(days=1), "1 day"),
)


_SECONDS = tuple(round(size.total_seconds()) for _, size, _ in WINDOWS)


@dataclass(frozen=True)
class TierLimits:
    per_minute: int
    per_hour: int
    per_day: int

    def for_window(self, name: str) -> int:
        return {"minute": self.per_minute, "hour": self.per_hour, "day": self.per_day}[name]


DEFAULT_TIERS: dict[str, TierLimits] = {
    "free": TierLimits(60, 1_000, 10_000),
    "pro": TierLimits(600, 10_000, 100_000),
    "enterprise": TierLimits(6_000, 200_000, 2_000_000),
}
PUBLIC_TIER = "public"
DEFAULT_TIER = "free"
PURGE_EVERY = 1000
PURGE_AFTER = timedelta(days=2)
"""Older than any window still counting (the longest is a day)."""


@dataclass(frozen=True)
class RateLimitStatus:
    """What the ``X-RateLimit-*`` headers report: the window closest to its limit."""

    limit: int
    remaining: int
    reset_epoch: int
    window: str

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_epoch),
        }


class RateLimiter:
    def __init__(
        self,
        repository: RateLimitRepository,
        tiers: dict[str, TierLimits],
        clock: Callable[[], datetime],
        *,
        purge_every: int = PURGE_EVERY,
    ) -> None:
        self._repo = repository
        self._tiers = tiers
        self._now = clock
        self._purge_every = purge_every
        self._checks = 0
        self._values: dict[str, tuple[int, ...]] = {}
        """Each tier's limits in the order of ``WINDOWS``."""
        self._table = RateTable(
            [window for window, _, _ in WINDOWS],
            {
                name: [limits.for_window(window) for window, _, _ in WINDOWS]
                for name, limits in tiers.items()
            },
            DEFAULT_TIER,
        )

    def _limits(self, tier: str) -> TierLimits:
        return self._tiers.get(tier) or self._tiers[DEFAULT_TIER]

    async def prepare(self, *, timeout: float | None = None) -> RateCharge:
        """The windows a request made now counts in, with every tier's limits: for a query
        that authenticates and counts in one round trip (``settle`` reads its answer)."""
        now = self._now()
        self._checks += 1
        if self._checks % self._purge_every == 0:
            # Every process sweeps now and then, so no scheduler is needed on Lambda and
            # the counters table holds about two days of windows, not all of history.
            await self._repo.purge_before(now - PURGE_AFTER, timeout=timeout)
        # Whole seconds: each window's start is a whole multiple of its (whole) size.
        epoch = int(now.timestamp())
        return RateCharge(
            at=now,
            start_epochs=tuple([epoch - epoch % seconds for seconds in _SECONDS]),
            table=self._table,
        )

    def settle(self, charge: RateCharge, tier: str, hits: Sequence[int]) -> RateLimitStatus:
        """The status of a request counted by a query (hits including it, as
        ``rate_limit_hit`` answers); raises ``RateLimited`` when it went over a limit."""
        values = self._values.get(tier)
        if values is None:
            limits = self._limits(tier)
            values = self._values[tier] = tuple(limits.for_window(w) for w, _, _ in WINDOWS)
        if len(hits) == len(values):
            # Allowed, the case of nearly every request: ``_conclude``'s answer (the window
            # with the smallest share left, the first of equals) without its objects.
            tightest = -1
            smallest = 0.0
            for i, limit in enumerate(values):
                used = hits[i]
                if used > limit:
                    break
                share = (limit - used) / limit
                if tightest < 0 or share < smallest:
                    tightest, smallest = i, share
            else:
                limit = values[tightest]
                return RateLimitStatus(
                    limit,
                    max(0, limit - hits[tightest]),
                    charge.start_epochs[tightest] + _SECONDS[tightest],
                    WINDOWS[tightest][2],
                )
        allowed, counts = evaluate(self._windows(charge, tier), hits)
        return self._conclude(charge.at, self._limits(tier), allowed, counts)

    async def check(
        self, subject: str, tier: str, *, timeout: float | None = None
    ) -> RateLimitStatus:
        """Count a request; raise ``RateLimited`` (carrying the status) when over a limit.

        ``timeout`` bounds the database work (``ServiceUnavailable`` past it)."""
        charge = await self.prepare(timeout=timeout)
        allowed, counts = await self._repo.hit(
            subject, self._windows(charge, tier), timeout=timeout
        )
        return self._conclude(charge.at, self._limits(tier), allowed, counts)

    def _windows(self, charge: RateCharge, tier: str) -> list[tuple[str, datetime, int]]:
        limits = self._limits(tier)
        return [
            (name, start, limits.for_window(name))
            for name, start in zip(charge.names, charge.starts, strict=True)
        ]

    def _conclude(
        self, now: datetime, limits: TierLimits, allowed: bool, counts: list[WindowCount]
    ) -> RateLimitStatus:
        statuses = []
        for (name, size, label), count in zip(WINDOWS, counts, strict=True):
            limit = limits.for_window(name)
            reset = int((count.window_start + size).timestamp())
            remaining = limit - count.hits
            statuses.append((remaining, RateLimitStatus(limit, max(0, remaining), reset, label)))
        exhausted = [s for remaining, s in statuses if remaining <= 0]
        tightest = min(statuses, key=lambda pair: pair[0] / pair[1].limit)[1]
        if not allowed:
            blocking = max(exhausted, key=lambda s: s.reset_epoch) if exhausted else tightest
            retry_after = max(1, blocking.reset_epoch - int(now.timestamp()))
            error = RateLimited(
                f"Rate limit exceeded. Please retry after {retry_after} seconds.",
                retry_after=retry_after,
                limit=blocking.limit,
                window=blocking.window,
                headers=blocking.headers(),
            )
            raise error
        return tightest
