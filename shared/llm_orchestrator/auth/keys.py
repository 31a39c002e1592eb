"""API key material: ``llo_sk_`` + 256 bits of randomness, kept only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import secrets

KEY_PREFIX = "llo_sk_"
MAX_KEY_LIFETIME_DAYS = 3650


def generate_api_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_secret(raw: str) -> str:
    """The stored form of a key or refresh token, as shown in listings."""
    return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()
