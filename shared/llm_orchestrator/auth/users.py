"""User administration and the bootstrap admin account."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from llm_orchestrator import ids
from llm_orchestrator.auth.passwords import MIN_PASSWORD_LENGTH, Passwords
from llm_orchestrator.auth.permissions import ROLES
from llm_orchestrator.errors import Conflict, FieldError, ValidationFailed
from llm_orchestrator.store.users import User, UserRepository

TIERS = ("free", "pro", "enterprise")


class UserService:
    def __init__(self, users: UserRepository, passwords: Passwords) -> None:
        self._users = users
        self._passwords = passwords

    async def create_user(
        self,
        *,
        username: str,
        email: str,
        password: str,
        roles: Sequence[str],
        tier: str = "free",
    ) -> User:
        problems = [
            FieldError(f"roles[{i}]", f"Unknown role '{r}'; allowed: {', '.join(ROLES)}")
            for i, r in enumerate(roles)
            if r not in ROLES
        ]
        if len(password) < MIN_PASSWORD_LENGTH:
            problems.append(
                FieldError("password", f"Must be at least {MIN_PASSWORD_LENGTH} characters")
            )
        if tier not in TIERS:
            problems.append(FieldError("tier", f"Unknown tier; allowed: {', '.join(TIERS)}"))
        if problems:
            raise ValidationFailed("Invalid user", problems)
        try:
            return await self._users.create(
                user_id=ids.user_id(),
                username=username,
                email=email,
                password_hash=await self._passwords.hash(password),
                roles=list(dict.fromkeys(roles)),
                tier=tier,
            )
        except Conflict as exc:
            raise Conflict(f"Username '{username}' is already taken") from exc

    async def list_users(self, *, limit: int, offset: int) -> tuple[list[User], int]:
        return await self._users.list(limit=limit, offset=offset)

    async def ensure_admin(
        self, username: str, password: str | None, *, email: str = "admin@example.com"
    ) -> str | None:
        """Create the bootstrap admin if the user does not exist yet.

        Returns the generated password when one had to be made up (to print once), else None.
        """
        if await self._users.get_by_username(username) is not None:
            return None
        generated = None if password else secrets.token_urlsafe(18)
        try:
            await self.create_user(
                username=username,
                email=email,
                password=password or generated or "",
                roles=["admin"],
                tier="enterprise",
            )
        except Conflict:
            return None  # another process created it first
        return generated
