"""Refresh-token families: rotation on every use, and family revocation on reuse."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from llm_orchestrator.store.db import Database


class Redemption(Enum):
    OK = "ok"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    REUSED = "reused"
    """Already used or revoked: the whole family has now been revoked."""


@dataclass(frozen=True)
class RedeemedToken:
    outcome: Redemption
    user_id: str | None = None
    family_id: uuid.UUID | None = None


class RefreshTokenRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def issue(
        self,
        *,
        jti: uuid.UUID,
        family_id: uuid.UUID,
        user_id: str,
        token_hash: str,
        issued_at: datetime,
        expires_at: datetime,
    ) -> None:
        async with self._db.connection() as conn:
            await conn.execute(
                "INSERT INTO refresh_tokens"
                " (jti, family_id, user_id, token_hash, issued_at, expires_at)"
                " VALUES (%s, %s, %s, %s, %s, %s)",
                (jti, family_id, user_id, token_hash, issued_at, expires_at),
            )

    async def redeem(self, token_hash: str, now: datetime) -> RedeemedToken:
        """Mark the token used, atomically; a second redemption revokes its family."""
        async with self._db.transaction() as conn:
            # ``family_revoked``: a successor issued while its family was being revoked (a
            # refresh racing a logout) must not keep the session alive.
            cur = await conn.execute(
                "SELECT t.jti, t.family_id, t.user_id, t.expires_at, t.used_at, t.revoked_at,"
                " EXISTS (SELECT 1 FROM refresh_tokens f WHERE f.family_id = t.family_id"
                " AND f.revoked_at IS NOT NULL) AS family_revoked"
                " FROM refresh_tokens t WHERE t.token_hash = %s FOR UPDATE",
                (token_hash,),
            )
            row = await cur.fetchone()
            if row is None:
                return RedeemedToken(Redemption.UNKNOWN)
            if row["used_at"] is not None or row["revoked_at"] is not None or row["family_revoked"]:
                await conn.execute(
                    "UPDATE refresh_tokens SET revoked_at = coalesce(revoked_at, %s)"
                    " WHERE family_id = %s",
                    (now, row["family_id"]),
                )
                return RedeemedToken(Redemption.REUSED, row["user_id"], row["family_id"])
            if row["expires_at"] <= now:
                return RedeemedToken(Redemption.EXPIRED, row["user_id"], row["family_id"])
            await conn.execute(
                "UPDATE refresh_tokens SET used_at = %s WHERE jti = %s", (now, row["jti"])
            )
            return RedeemedToken(Redemption.OK, row["user_id"], row["family_id"])

    async def revoke_family(self, family_id: uuid.UUID, user_id: str, now: datetime) -> None:
        """End a login session: its refresh tokens and (through the session check on every
        request) its access tokens stop working."""
        async with self._db.connection() as conn:
            await conn.execute(
                "UPDATE refresh_tokens SET revoked_at = coalesce(revoked_at, %s)"
                " WHERE family_id = %s AND user_id = %s",
                (now, family_id, user_id),
            )
