"""JWT access and refresh tokens: HS256 only, with a ``kid``, ``typ`` and ``jti``.

Every authenticated request decodes its access token, and PyJWT's decode (two base64 passes
that check each character in Python, JSON twice, an HMAC) was a fifth of a ``GET``'s CPU. A
codec remembers the access tokens whose signature it has verified, so a client sending the
same token again pays a dictionary lookup; the expiry is still checked against ``now`` on
every use, and revocation never depended on the decode (it is checked in the database on
every request).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import jwt

from llm_orchestrator.errors import Unauthorized

ALGORITHM = "HS256"
ISSUER = "llm-orchestrator"
TokenType = Literal["access", "refresh"]
VERIFIED_CACHE_SIZE = 4096
"""Access tokens remembered as verified per codec (about 1.5 MB at most); when full, the
oldest half is forgotten."""


@dataclass(frozen=True)
class TokenClaims:
    subject: str
    token_type: TokenType
    jti: uuid.UUID
    issued_at: datetime
    expires_at: datetime
    family_id: uuid.UUID | None = None


class TokenCodec:
    def __init__(self, secret: str, *, key_id: str) -> None:
        if len(secret.encode()) < 32:
            raise ValueError("the JWT secret must be at least 32 bytes")
        self._secret = secret
        self._key_id = key_id
        self._verified: dict[str, TokenClaims] = {}

    def issue(
        self,
        *,
        subject: str,
        token_type: TokenType,
        now: datetime,
        ttl: timedelta,
        family_id: uuid.UUID | None = None,
    ) -> tuple[str, TokenClaims]:
        claims = TokenClaims(
            subject=subject,
            token_type=token_type,
            jti=uuid.uuid4(),
            issued_at=now,
            expires_at=now + ttl,
            family_id=family_id,
        )
        payload: dict[str, Any] = {
            "iss": ISSUER,
            "sub": subject,
            "typ": token_type,
            "jti": str(claims.jti),
            "iat": int(now.timestamp()),
            "exp": int(claims.expires_at.timestamp()),
        }
        if family_id is not None:
            payload["fam"] = str(family_id)
        token = jwt.encode(
            payload, self._secret, algorithm=ALGORITHM, headers={"kid": self._key_id}
        )
        return token, claims

    def decode(self, token: str, *, expected_type: TokenType, now: datetime) -> TokenClaims:
        known = self._verified.get(token)
        if known is not None:
            if known.token_type != expected_type:
                raise Unauthorized("Invalid token")
            if known.expires_at.timestamp() <= now.timestamp():
                raise Unauthorized("Token expired")
            return known
        claims = self._verify(token, expected_type=expected_type, now=now)
        if expected_type == "access":  # a refresh token is used once: nothing to remember
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                for stale in list(self._verified)[: VERIFIED_CACHE_SIZE // 2]:
                    del self._verified[stale]
            self._verified[token] = claims
        return claims

    def _verify(self, token: str, *, expected_type: TokenType, now: datetime) -> TokenClaims:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("kid") != self._key_id:
                raise Unauthorized("Invalid token")
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={
                    "require": ["exp", "iat", "sub", "jti", "typ", "iss"],
                    "verify_iat": False,
                },
                leeway=0,
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("Token expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("Invalid token") from exc
        if payload.get("typ") != expected_type:
            raise Unauthorized("Invalid token")
        if payload["exp"] <= now.timestamp():
            raise Unauthorized("Token expired")
        try:
            family = uuid.UUID(payload["fam"]) if "fam" in payload else None
            jti = uuid.UUID(payload["jti"])
        except (ValueError, TypeError) as exc:
            raise Unauthorized("Invalid token") from exc
        return TokenClaims(
            subject=str(payload["sub"]),
            token_type=expected_type,
            jti=jti,
            issued_at=datetime.fromtimestamp(payload["iat"], tz=now.tzinfo),
            expires_at=datetime.fromtimestamp(payload["exp"], tz=now.tzinfo),
            family_id=family,
        )
