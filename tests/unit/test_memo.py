"""The identity-keyed cache behind the compiled-machine and parsed-definition caches."""

from __future__ import annotations

from typing import Any

import pytest

from llm_orchestrator.memo import IdentityCache


def test_the_same_object_hits_and_an_equal_copy_misses() -> None:
    made: list[dict[str, Any]] = []

    def make(document: dict[str, Any]) -> int:
        made.append(document)
        return len(made)

    cache: IdentityCache[dict[str, Any], int] = IdentityCache(4)
    document = {"steps": [1]}

    assert cache.get(document, make) == 1
    assert cache.get(document, make) == 1
    assert cache.get(dict(document), make) == 2  # equal, but read again: not trusted
    assert len(made) == 2


def test_the_least_recently_used_entry_goes_first() -> None:
    cache: IdentityCache[list[int], int] = IdentityCache(2)
    first, second, third = [1], [2], [3]
    cache.get(first, len)
    cache.get(second, len)
    cache.get(first, len)  # used again: second is now the oldest
    cache.get(third, len)

    calls: list[list[int]] = []

    def counting(key: list[int]) -> int:
        calls.append(key)
        return 0

    cache.get(first, counting)
    assert calls == []
    cache.get(second, counting)
    assert calls == [second]
    assert len(cache) == 2


def test_a_cache_needs_room() -> None:
    with pytest.raises(ValueError):
        IdentityCache(0)
