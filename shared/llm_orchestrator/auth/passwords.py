"""Password hashing with argon2id."""

from __future__ import annotations

from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_PASSWORD_LENGTH = 8


@lru_cache(maxsize=1)
def _hasher() -> PasswordHasher:
    return PasswordHasher()  # argon2id with the library's RFC 9106 low-memory profile


@lru_cache(maxsize=1)
def _decoy_hash() -> str:
    # Verified against when the username is unknown, so both failures cost the same time.
    return _hasher().hash("decoy password that never matches")


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher().verify(password_hash or _decoy_hash(), password) and (
            password_hash is not None
        )
    except (VerificationError, InvalidHashError):
        return False
