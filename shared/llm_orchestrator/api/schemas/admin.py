"""Request and response bodies of the admin group."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, EmailStr, Field

from llm_orchestrator.api.schemas.common import PageMeta, StrictModel

if TYPE_CHECKING:
    from llm_orchestrator.store.users import User

RoleName = Literal["admin", "developer", "viewer"]


def _default_roles() -> list[RoleName]:
    return ["developer"]


class CreateUserRequest(StrictModel):
    username: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    email: EmailStr
    password: str = Field(min_length=8, max_length=1024)
    roles: list[RoleName] = Field(default_factory=_default_roles, min_length=1)
    tier: Literal["free", "pro", "enterprise"] = "free"


class UserPublic(BaseModel):
    id: str
    username: str
    email: str
    roles: list[str]
    tier: str
    created_at: datetime
    last_login: datetime | None

    @classmethod
    def of(cls, user: User) -> UserPublic:
        return cls(
            id=user.id,
            username=user.username,
            email=user.email,
            roles=list(user.roles),
            tier=user.tier,
            created_at=user.created_at,
            last_login=user.last_login,
        )


class UserList(PageMeta):
    users: list[UserPublic]
