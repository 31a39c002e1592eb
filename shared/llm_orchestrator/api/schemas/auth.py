"""Request and response bodies of the auth group."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, Field, WithJsonSchema

from llm_orchestrator.api.schemas.common import PageMeta, StrictModel
from llm_orchestrator.auth.keys import MAX_KEY_LIFETIME_DAYS
from llm_orchestrator.auth.permissions import SCOPES

if TYPE_CHECKING:
    from llm_orchestrator.store.api_keys import ApiKey


class LoginRequest(StrictModel):
    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


class RefreshRequest(StrictModel):
    refresh_token: str = Field(min_length=1, max_length=4096)


class TokenResponse(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"
    expires_in: int
    user_id: str
    roles: list[str]


class CreateKeyRequest(StrictModel):
    name: str = Field(min_length=1, max_length=128)
    # Checked by the auth service, whose message lists the allowed scopes; the document
    # shows the same list as an enum.
    scopes: list[Annotated[str, WithJsonSchema({"type": "string", "enum": list(SCOPES)})]] = Field(
        min_length=1, max_length=16
    )
    expires_in_days: int | None = Field(default=None, ge=1, le=MAX_KEY_LIFETIME_DAYS)
    user_id: str | None = Field(
        default=None,
        description="Owner of the key (admins minting a key for another user); default: caller",
    )


class ApiKeyPublic(BaseModel):
    id: uuid.UUID
    key_hash: str
    user_id: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    name: str
    last_used_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyPublic:
        return cls(
            id=key.id,
            key_hash=key.key_hash,
            user_id=key.user_id,
            scopes=list(key.scopes),
            created_at=key.created_at,
            expires_at=key.expires_at,
            name=key.name,
            last_used_at=key.last_used_at,
        )


class CreatedKeyResponse(BaseModel):
    id: uuid.UUID
    key: str = Field(description="The raw key. Shown only in this response.")
    user_id: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    name: str


class KeyList(PageMeta):
    keys: list[ApiKeyPublic]
