"""The secrets read cache: what a step's credential and setting lookups cost."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from llm_orchestrator.secrets.cache import Fetched, SecretCache

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Backend:
    """A store's storage: counts the reads that reach it."""

    def __init__(self, values: Fetched) -> None:
        self.values = values
        self.reads: list[list[str]] = []

    async def fetch(self, names: list[str]) -> Fetched:
        self.reads.append(names)
        return {name: self.values[name] for name in names if name in self.values}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_repeated_reads_reach_the_backend_once_misses_included() -> None:
    backend = Backend({"PGVECTOR_URL": ("postgresql://h/db", None)})
    cache = SecretCache(16, 60, Clock())

    for _ in range(3):
        found = await cache.read_through(["PGVECTOR_URL", "QDRANT_URL"], backend.fetch, NOW)
        assert found == {"PGVECTOR_URL": "postgresql://h/db"}

    assert backend.reads == [["PGVECTOR_URL", "QDRANT_URL"]]


async def test_a_write_drops_the_name_and_the_next_read_sees_the_new_value() -> None:
    backend = Backend({"PGVECTOR_URL": ("old", None)})
    cache = SecretCache(16, 60, Clock())
    await cache.read_through(["PGVECTOR_URL"], backend.fetch, NOW)

    backend.values["PGVECTOR_URL"] = ("new", None)
    cache.drop("PGVECTOR_URL")

    assert await cache.read_through(["PGVECTOR_URL"], backend.fetch, NOW) == {"PGVECTOR_URL": "new"}


async def test_entries_are_read_again_after_their_time() -> None:
    clock = Clock()
    backend = Backend({"K": ("v1", None)})
    cache = SecretCache(16, 60, clock)
    await cache.read_through(["K"], backend.fetch, NOW)
    backend.values["K"] = ("v2", None)  # written by another process

    clock.now = 59.9
    assert await cache.read_through(["K"], backend.fetch, NOW) == {"K": "v1"}
    clock.now = 60.0
    assert await cache.read_through(["K"], backend.fetch, NOW) == {"K": "v2"}


async def test_a_cached_secret_is_never_served_past_its_expiry() -> None:
    backend = Backend({"K": ("v", NOW + timedelta(seconds=5))})
    cache = SecretCache(16, 60, Clock())

    assert await cache.read_through(["K"], backend.fetch, NOW) == {"K": "v"}
    assert await cache.read_through(["K"], backend.fetch, NOW + timedelta(seconds=5)) == {}
    assert len(backend.reads) == 1


async def test_a_value_fetched_while_a_write_happens_is_not_kept() -> None:
    cache = SecretCache(16, 60, Clock())
    backend = Backend({"K": ("old", None)})

    async def racing_fetch(names: list[str]) -> Fetched:
        fetched = await backend.fetch(names)
        cache.drop("K")  # the write lands between the read and the caching
        return fetched

    assert await cache.read_through(["K"], racing_fetch, NOW) == {"K": "old"}
    backend.values["K"] = ("new", None)
    assert await cache.read_through(["K"], backend.fetch, NOW) == {"K": "new"}


async def test_size_bounds_the_entries_and_zero_seconds_turns_caching_off() -> None:
    bounded = SecretCache(2, 60, Clock())
    backend = Backend({})
    await bounded.read_through(["A", "B", "C"], backend.fetch, NOW)
    assert len(bounded) == 2

    off = SecretCache(16, 0, Clock())
    await off.read_through(["A"], backend.fetch, NOW)
    await off.read_through(["A"], backend.fetch, NOW)
    assert len(off) == 0
    assert backend.reads[-2:] == [["A"], ["A"]]
