"""A small least-recently-used cache keyed by an object's identity.

For values derived from an immutable JSON document that is handed around as the same
object (a workflow's pinned definition, its compiled state machine): the key is the
object itself, held by the cache so its identity cannot be reused while cached, and
nothing is ever hashed or compared. A caller that gets an equal but different object (read
again from the database) simply misses.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

_K = TypeVar("_K")
_V = TypeVar("_V")


class IdentityCache(Generic[_K, _V]):
    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self._size = size
        self._entries: OrderedDict[int, tuple[_K, _V]] = OrderedDict()

    def get(self, key: _K, make: Callable[[_K], _V]) -> _V:
        """The value cached for ``key`` (this very object), else ``make(key)``, cached."""
        entry = self._entries.get(id(key))
        if entry is not None and entry[0] is key:
            self._entries.move_to_end(id(key))
            return entry[1]
        value = make(key)
        self._entries[id(key)] = (key, value)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._entries)
