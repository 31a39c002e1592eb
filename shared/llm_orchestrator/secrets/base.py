"""The secrets-store port: what the platform needs from any backend.

The ``db`` backend (``DbSecretsStore``) keeps encrypted rows in PostgreSQL; an AWS Secrets
Manager backend implements the same protocol. Values are plain ``str`` only between a store
and the adapter that uses them (a provider client); nothing else should hold one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol

from llm_orchestrator.errors import FieldError, ValidationFailed

SECRET_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
"""Names double as environment-variable names (``OPENAI_API_KEY``), so they follow that shape."""
MAX_SECRET_VALUE_CHARS = 65_536
MAX_SECRET_TTL = timedelta(days=365)

_NAME = re.compile(SECRET_NAME_PATTERN)


class SecretsStore(Protocol):
    @property
    def backend(self) -> str:
        """The ``LLMO_SECRETS_BACKEND`` value this store implements."""
        ...

    async def put(self, name: str, value: str, *, ttl: timedelta | None = None) -> None:
        """Store or replace ``name``; after ``ttl`` (None: never) it is no longer served."""
        ...

    async def get(self, name: str) -> str | None:
        """The value of an unexpired secret, or None."""
        ...

    async def get_many(self, names: Sequence[str]) -> dict[str, str]:
        """The unexpired ones among ``names``, in one round trip where the backend allows."""
        ...

    async def names(self) -> list[str]:
        """Names of the unexpired secrets, sorted; never values."""
        ...


def validate_secret(name: str, value: str, ttl: timedelta | None) -> None:
    """The rules every backend enforces, whichever door a secret comes in through."""
    errors: list[FieldError] = []
    if not _NAME.match(name):
        errors.append(
            FieldError("key", "must start with a letter or '_' and contain only A-Z, a-z, 0-9, '_'")
        )
    if not value.strip():
        errors.append(FieldError("value", "must not be empty"))
    elif len(value) > MAX_SECRET_VALUE_CHARS:
        errors.append(FieldError("value", f"must be at most {MAX_SECRET_VALUE_CHARS} characters"))
    if ttl is not None and not timedelta(seconds=1) <= ttl <= MAX_SECRET_TTL:
        errors.append(FieldError("ttl_seconds", "must be between 1 and 31536000 seconds"))
    if errors:
        raise ValidationFailed("Invalid secret", errors)
