"""The one embedding function every fake provider uses, so their vectors agree.

A hashed bag of words, normalised: each word (lower-cased, stop words dropped) adds ±1 to
one of ``dim`` buckets chosen by its hash. Texts sharing words point the same way, so
cosine similarity ranks "Paris is the capital of France" first for "capital of France?",
which is enough for retrieval tests to be about something. Equal texts embed equally,
in every process and on every run.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
from collections.abc import Sequence

__all__ = ["DEFAULT_DIM", "cosine", "count_tokens", "fake_embedding", "words"]

DEFAULT_DIM = 64
"""Dimension of the fakes' vectors unless a request or a fake says otherwise."""

_WORD = re.compile(r"[a-z0-9]+")
_STOP_WORDS = frozenset(
    "a an and are as at be by do does for from how in is it its of on or the to was "
    "what when where which who why with".split()
)


def count_tokens(text: str) -> int:
    """The fakes' tokenizer: one token per whitespace-separated word."""
    return len(text.split())


def words(text: str) -> list[str]:
    """The words that count for similarity: lower-cased, alphanumeric, no stop words."""
    return [word for word in _WORD.findall(text.lower()) if word not in _STOP_WORDS]


def fake_embedding(text: str, dim: int = DEFAULT_DIM) -> list[float]:
    """A deterministic unit vector for ``text`` of ``dim`` dimensions."""
    if dim <= 0:
        raise ValueError("dim must be positive")
    vector = [0.0] * dim
    for word in words(text):
        digest = hashlib.sha256(word.encode()).digest()
        bucket = int.from_bytes(digest[:4], "little") % dim
        vector[bucket] += 1.0 if digest[4] & 1 else -1.0
    if not any(vector):
        # No content words (empty, punctuation, only stop words): still a unit vector, and
        # still one that differs between different texts.
        raw = b"".join(
            hashlib.sha256(f"{block}:{text}".encode()).digest()
            for block in range(math.ceil(dim / 8))
        )
        vector = [(n / 0xFFFFFFFF) * 2.0 - 1.0 for n in struct.unpack(f"<{dim}I", raw[: dim * 4])]
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity, 0.0 when either vector is all zeros (the vector fakes' search)."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0
