"""The access-token codec remembers tokens it has verified; what it remembers never lets a
token through that a fresh decode would refuse."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from llm_orchestrator.auth import tokens
from llm_orchestrator.auth.tokens import TokenCodec
from llm_orchestrator.errors import Unauthorized

SECRET = "s" * 40
# PyJWT checks the expiry against the real clock too: issue around now.
NOW = datetime.now(UTC).replace(microsecond=0)


def issue(codec: TokenCodec, token_type: tokens.TokenType = "access", ttl_minutes: int = 15) -> str:
    token, _ = codec.issue(
        subject="user-1",
        token_type=token_type,
        now=NOW,
        ttl=timedelta(minutes=ttl_minutes),
        family_id=uuid.uuid4(),
    )
    return token


def test_a_remembered_token_still_expires() -> None:
    codec = TokenCodec(SECRET, key_id="k1")
    token = issue(codec)
    assert codec.decode(token, expected_type="access", now=NOW).subject == "user-1"
    assert codec.decode(token, expected_type="access", now=NOW).subject == "user-1"

    with pytest.raises(Unauthorized, match="Token expired"):
        codec.decode(token, expected_type="access", now=NOW + timedelta(minutes=15))


def test_a_remembered_access_token_is_still_no_refresh_token() -> None:
    codec = TokenCodec(SECRET, key_id="k1")
    token = issue(codec)
    codec.decode(token, expected_type="access", now=NOW)

    with pytest.raises(Unauthorized, match="Invalid token"):
        codec.decode(token, expected_type="refresh", now=NOW)


def test_a_tampered_copy_of_a_remembered_token_is_refused() -> None:
    codec = TokenCodec(SECRET, key_id="k1")
    token = issue(codec)
    codec.decode(token, expected_type="access", now=NOW)
    header, payload, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]

    with pytest.raises(Unauthorized):
        codec.decode(f"{header}.{payload}.{flipped}", expected_type="access", now=NOW)


def test_another_secret_does_not_share_what_one_codec_verified() -> None:
    codec = TokenCodec(SECRET, key_id="k1")
    token = issue(codec)
    codec.decode(token, expected_type="access", now=NOW)

    with pytest.raises(Unauthorized):
        TokenCodec("t" * 40, key_id="k1").decode(token, expected_type="access", now=NOW)


def test_the_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "VERIFIED_CACHE_SIZE", 8)
    codec = TokenCodec(SECRET, key_id="k1")
    issued = [issue(codec) for _ in range(20)]
    for token in issued:
        codec.decode(token, expected_type="access", now=NOW)

    assert len(codec._verified) <= 8
    # Forgotten tokens are verified again, not refused.
    assert codec.decode(issued[0], expected_type="access", now=NOW).subject == "user-1"
