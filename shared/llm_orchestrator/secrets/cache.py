"""The read cache both secrets backends put in front of their storage.

A step resolves its provider's credentials and its vector database's settings (for
pgvector, ``PGVECTOR_URL``) on every call; without a cache each is a round trip to
PostgreSQL or Secrets Manager. Entries live ``seconds`` at most (misses included: most
provider variables are usually unset), at most ``size`` names, least recently used first
out. A write through the store drops the name at once, so this process serves the new value
on its very next read; another process sees it within ``seconds``. A cached value is never
served past its own expiry (a secret stored with a TTL).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

__all__ = ["Fetched", "SecretCache"]

Fetched = dict[str, tuple[str, datetime | None]]
"""Name → (value, expires at) of those of the requested names a backend holds."""


class SecretCache:
    """Least-recently-used, at most ``size`` names, each kept ``seconds`` at most."""

    def __init__(self, size: int, seconds: float, clock: Callable[[], float]) -> None:
        self._size = size
        self._seconds = seconds
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, str | None, datetime | None]] = OrderedDict()
        self._lock = threading.Lock()
        self._writes = 0

    def get(self, name: str) -> tuple[bool, str | None, datetime | None]:
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or self._clock() - entry[0] >= self._seconds:
                self._entries.pop(name, None)
                return False, None, None
            self._entries.move_to_end(name)
            return True, entry[1], entry[2]

    def put(self, name: str, value: str | None, expires_at: datetime | None) -> None:
        if self._size <= 0 or self._seconds <= 0:
            return
        with self._lock:
            self._entries[name] = (self._clock(), value, expires_at)
            self._entries.move_to_end(name)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def drop(self, name: str) -> None:
        """Forget ``name``: its store is writing it."""
        with self._lock:
            self._writes += 1
            self._entries.pop(name, None)

    def clear(self) -> None:
        """Forget everything: writes may have gone unannounced (a lease change, when the
        notices of other processes' writes could not arrive)."""
        with self._lock:
            self._writes += 1
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    async def read_through(
        self,
        names: Sequence[str],
        fetch: Callable[[list[str]], Awaitable[Fetched]],
        now: datetime,
    ) -> dict[str, str]:
        """The unexpired ones among ``names``: cached entries, and ``fetch`` (one call) for
        the rest, which are cached unless a write happened meanwhile (the fetched value may
        be the one that write replaced)."""
        found: dict[str, str] = {}
        missing: list[str] = []
        for name in dict.fromkeys(names):
            hit, value, expires_at = self.get(name)
            if not hit:
                missing.append(name)
            elif value is not None and (expires_at is None or expires_at > now):
                found[name] = value
        if not missing:
            return found
        writes = self._writes
        fetched = await fetch(missing)
        for name in missing:
            value, expires_at = fetched.get(name, (None, None))
            if writes == self._writes:
                self.put(name, value, expires_at)
            if value is not None and (expires_at is None or expires_at > now):
                found[name] = value
        return found
