"""Authentication: logins, refresh-token rotation, API keys, and turning credentials into a
``Principal``. Takes its repositories and clock as arguments; no HTTP, no SQL."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from llm_orchestrator.auth.keys import (
    KEY_PREFIX,
    generate_api_key,
    hash_secret,
)
from llm_orchestrator.auth.passwords import Passwords
from llm_orchestrator.auth.permissions import (
    SCOPES,
    Permission,
    key_permissions,
    permissions_for_roles,
    permissions_for_scopes,
)
from llm_orchestrator.auth.principal import Principal, user_subject
from llm_orchestrator.auth.tokens import TokenCodec
from llm_orchestrator.errors import FieldError, Forbidden, NotFound, Unauthorized, ValidationFailed
from llm_orchestrator.store.api_keys import ApiKey, ApiKeyRepository
from llm_orchestrator.store.db import Read
from llm_orchestrator.store.rate_limits import RateCharge
from llm_orchestrator.store.refresh_tokens import Redemption, RefreshTokenRepository
from llm_orchestrator.store.users import User, UserRepository

INVALID_LOGIN = "Invalid username or password"
OWNER_FILTERS_REMEMBERED = 10_000

Ride = Callable[[str | None, str | None], "Read[Any] | None"]
"""Given the owner filter a caller is expected to have and their user id when known before
the lookup (a bearer token's verified subject), the read their request will make."""


@functools.lru_cache(maxsize=256)
def _role_permissions(roles: tuple[str, ...]) -> frozenset[Permission]:
    """``permissions_for_roles``, remembered per set of roles: a pure mapping asked on every
    request (the roles themselves are read fresh each time, so a change takes effect on the
    next request)."""
    return permissions_for_roles(roles)


@functools.lru_cache(maxsize=256)
def _key_permissions(scopes: tuple[str, ...], roles: tuple[str, ...]) -> frozenset[Permission]:
    """``key_permissions``, remembered like :func:`_role_permissions`."""
    return key_permissions(scopes, roles)


@dataclass(frozen=True)
class Carried:
    """A read that went out with the authenticating statement, and its answer."""

    read: Read[Any]
    answer: Any


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    user: User


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    raw_key: str


class AuthService:
    def __init__(
        self,
        *,
        users: UserRepository,
        passwords: Passwords,
        api_keys: ApiKeyRepository,
        refresh_tokens: RefreshTokenRepository,
        codec: TokenCodec,
        access_ttl: timedelta,
        refresh_ttl: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        self._users = users
        self._passwords = passwords
        self._keys = api_keys
        self._refresh = refresh_tokens
        self._codec = codec
        self._access_ttl = access_ttl
        self._refresh_ttl = refresh_ttl
        self._now = clock
        self._owner_filters: dict[str, str | None] = {}
        """Each user's (by id) and API key's (by hash) owner filter as their last request
        found it: the guess a read riding on the next authentication is built with (see
        ``authenticate_bearer_counted``)."""

    async def login(self, username: str, password: str) -> TokenPair:
        user = await self._users.get_by_username(username)
        # Verify even for an unknown user so both failures take the same time.
        verified = await self._passwords.verify(user.password_hash if user else None, password)
        if not verified or user is None:
            raise Unauthorized(INVALID_LOGIN)
        now = self._now()
        await self._users.record_login(user.id, now)
        return await self._issue_pair(user, family_id=uuid.uuid4(), now=now)

    async def refresh(self, refresh_token: str) -> TokenPair:
        now = self._now()
        self._codec.decode(refresh_token, expected_type="refresh", now=now)
        redeemed = await self._refresh.redeem(hash_secret(refresh_token), now)
        if redeemed.outcome is Redemption.REUSED:
            raise Unauthorized("Refresh token already used; its session has been revoked")
        if redeemed.outcome is not Redemption.OK or redeemed.user_id is None:
            raise Unauthorized("Invalid refresh token")
        user = await self._users.get(redeemed.user_id)
        if user is None:
            raise Unauthorized("Invalid refresh token")
        assert redeemed.family_id is not None
        return await self._issue_pair(user, family_id=redeemed.family_id, now=now)

    async def _issue_pair(self, user: User, *, family_id: uuid.UUID, now: datetime) -> TokenPair:
        # The access token names its session, so revoking the session (logout, or a reused
        # refresh token) revokes the access tokens issued in it too.
        access, _ = self._codec.issue(
            subject=user.id,
            token_type="access",
            now=now,
            ttl=self._access_ttl,
            family_id=family_id,
        )
        refresh, claims = self._codec.issue(
            subject=user.id,
            token_type="refresh",
            now=now,
            ttl=self._refresh_ttl,
            family_id=family_id,
        )
        await self._refresh.issue(
            jti=claims.jti,
            family_id=family_id,
            user_id=user.id,
            token_hash=hash_secret(refresh),
            issued_at=now,
            expires_at=claims.expires_at,
        )
        return TokenPair(access, refresh, int(self._access_ttl.total_seconds()), user)

    async def authenticate_bearer(self, token: str) -> Principal:
        principal, _, _ = await self.authenticate_bearer_counted(token, None)
        return principal

    async def authenticate_bearer_counted(
        self,
        token: str,
        charge: RateCharge | None,
        ride: Ride | None = None,
    ) -> tuple[Principal, list[int] | None, Carried | None]:
        """The caller, and with ``charge`` this request counted against their rate limits
        in the same round trip (the hits the limiter settles; None without a charge).

        ``ride``, given the owner filter the caller is expected to have, names the read the
        request will make (or None): it goes out with the user lookup, and comes back with
        its answer when the session is live. The guess is the filter the user's previous
        request had (their own rows before that); the caller compares it with the
        principal's real one, from this very lookup, before using the answer.
        """
        claims = self._codec.decode(token, expected_type="access", now=self._now())
        if claims.family_id is None:
            raise Unauthorized("Invalid token")  # every access token names its session
        read = None
        if ride is not None:
            read = ride(self._owner_filters.get(claims.subject, claims.subject), claims.subject)
        user, revoked, hits, answer = await self._users.get_in_session(
            claims.subject,
            claims.family_id,
            count=None if charge is None else (user_subject(claims.subject), charge),
            ride=read,
        )
        if user is None:
            raise Unauthorized("Invalid token")
        if revoked:
            raise Unauthorized("Session revoked; log in again")
        principal = Principal(
            user_id=user.id,
            username=user.username,
            roles=user.roles,
            tier=user.tier,
            permissions=_role_permissions(user.roles),
            via="jwt",
            session_id=claims.family_id,
        )
        if read is not None:
            self._remember_owner_filter(user.id, principal)
        carried = None if read is None or answer is None else Carried(read, answer[0])
        return principal, hits, carried

    async def logout(self, caller: Principal) -> None:
        """End the caller's login session: its refresh and access tokens stop working."""
        if caller.session_id is None:
            # A well-formed request whose credential has no session to end: not a validation
            # error (nothing in the request is malformed) but an action this credential lacks.
            raise Forbidden(
                "Only a token session can log out; revoke an API key with DELETE /auth/keys/{id}"
            )
        await self._refresh.revoke_family(caller.session_id, caller.user_id, self._now())

    async def authenticate_api_key(self, raw_key: str) -> Principal:
        principal, _, _ = await self.authenticate_api_key_counted(raw_key, None)
        return principal

    async def authenticate_api_key_counted(
        self, raw_key: str, charge: RateCharge | None, ride: Ride | None = None
    ) -> tuple[Principal, list[int] | None, Carried | None]:
        """The caller of an API key, and with ``charge`` this request counted against the
        key's rate limits, in one round trip (as ``authenticate_bearer_counted``, ``ride``
        too: its guess is the owner filter the key's previous request had; a key not seen
        before carries no read, its owner being unknown until the lookup)."""
        if not raw_key.startswith(KEY_PREFIX):
            raise Unauthorized("Invalid API key")
        key_hash = hash_secret(raw_key)
        read = None
        if ride is not None and key_hash in self._owner_filters:
            read = ride(self._owner_filters[key_hash], None)
        found = await self._keys.authenticate(key_hash, self._now(), count=charge, ride=read)
        if found is None:
            raise Unauthorized("Invalid, expired or revoked API key")
        key, user, hits, answer = found
        principal = Principal(
            user_id=user.id,
            username=user.username,
            roles=user.roles,
            tier=user.tier,
            permissions=_key_permissions(key.scopes, user.roles),
            via="api_key",
            api_key_id=key.id,
        )
        if ride is not None:
            self._remember_owner_filter(key_hash, principal)
        carried = None if read is None or answer is None else Carried(read, answer[0])
        return principal, hits, carried

    def _remember_owner_filter(self, caller: str, principal: Principal) -> None:
        if len(self._owner_filters) >= OWNER_FILTERS_REMEMBERED:
            self._owner_filters.clear()
        self._owner_filters[caller] = principal.owner_filter()

    async def create_key(
        self,
        caller: Principal,
        *,
        name: str,
        scopes: Sequence[str],
        expires_in_days: int | None,
        owner_id: str | None = None,
    ) -> CreatedKey:
        unknown = [
            FieldError(f"scopes[{i}]", f"Unknown scope '{s}'; allowed: {', '.join(SCOPES)}")
            for i, s in enumerate(scopes)
            if s not in SCOPES
        ]
        if unknown:
            raise ValidationFailed("Invalid API key request", unknown)
        owner = await self._users.get(owner_id) if owner_id else None
        if owner_id and owner is None:
            raise ValidationFailed(
                "Invalid API key request", [FieldError("user_id", "No such user")]
            )
        owner_roles = owner.roles if owner else caller.roles
        # A key never carries more than its owner's roles, nor more than its creator holds.
        allowed = permissions_for_roles(owner_roles) & caller.permissions
        excess = sorted(s for s in scopes if not permissions_for_scopes([s]) <= allowed)
        if excess:
            raise Forbidden("Scopes exceed the key owner's permissions", {"scopes": excess})
        now = self._now()
        raw = generate_api_key()
        key = await self._keys.create(
            key_id=uuid.uuid4(),
            user_id=owner.id if owner else caller.user_id,
            name=name,
            key_hash=hash_secret(raw),
            scopes=sorted(set(scopes), key=SCOPES.index),
            expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
        )
        return CreatedKey(key, raw)

    async def list_keys(
        self, caller: Principal, *, limit: int, offset: int
    ) -> tuple[list[ApiKey], int]:
        return await self._keys.list_for_user(caller.user_id, limit=limit, offset=offset)

    async def revoke_key(self, caller: Principal, key_id: str) -> None:
        try:
            parsed = uuid.UUID(key_id)
        except ValueError as exc:
            raise NotFound("API key not found") from exc
        if not await self._keys.revoke(parsed, owner_id=caller.owner_filter(), now=self._now()):
            raise NotFound("API key not found")
