"""Who is calling, and what they may do."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from llm_orchestrator.auth.permissions import Permission
from llm_orchestrator.errors import Forbidden


@dataclass(frozen=True)
class Principal:
    user_id: str
    username: str
    roles: tuple[str, ...]
    tier: str
    permissions: frozenset[Permission]
    via: Literal["jwt", "api_key", "trigger"]
    """How the caller authenticated; "trigger" is a trigger running as its creator."""
    api_key_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None
    """The login session (refresh-token family) of an access token; None for API keys."""

    @property
    def is_admin(self) -> bool:
        return Permission.ADMIN_ACCESS in self.permissions

    @property
    def rate_limit_subject(self) -> str:
        """Limits apply per API key, and per user for token sessions."""
        return f"key:{self.api_key_id}" if self.api_key_id else user_subject(self.user_id)

    def require(self, permission: Permission) -> None:
        if permission not in self.permissions:
            raise Forbidden(
                f"Missing permission {permission.value}",
                {"required_permission": permission.value},
            )

    def owner_filter(self) -> str | None:
        """The owner to restrict queries to: None for admins, who see everything."""
        return None if self.is_admin else self.user_id


def user_subject(user_id: str) -> str:
    """The rate-limit subject of a user's token sessions."""
    return f"user:{user_id}"
