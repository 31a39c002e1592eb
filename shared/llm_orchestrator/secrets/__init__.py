"""Secrets: the store port, the encrypted PostgreSQL backend, and provider credentials.

Values never leave a store except towards the adapter that needs them: responses, log
lines, audit events and execution state carry secret names only.

The names below load on first use: importing the port (``secrets.base``, which the API
schemas need) must not pull in ``cryptography`` and the store.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llm_orchestrator.secrets.base import (
        MAX_SECRET_TTL,
        SECRET_NAME_PATTERN,
        SecretsStore,
        validate_secret,
    )
    from llm_orchestrator.secrets.credentials import (
        SecretsCredentialResolver,
        SecretsSettingResolver,
    )
    from llm_orchestrator.secrets.crypto import (
        SecretCipher,
        SecretDecryptionError,
        SecretsKeyError,
        generate_key,
        parse_key,
    )
    from llm_orchestrator.secrets.db_store import DbSecretsStore

_HOMES = {
    "MAX_SECRET_TTL": "base",
    "SECRET_NAME_PATTERN": "base",
    "SecretsStore": "base",
    "validate_secret": "base",
    "SecretsCredentialResolver": "credentials",
    "SecretsSettingResolver": "credentials",
    "SecretCipher": "crypto",
    "SecretDecryptionError": "crypto",
    "SecretsKeyError": "crypto",
    "generate_key": "crypto",
    "parse_key": "crypto",
    "DbSecretsStore": "db_store",
}

__all__ = [
    "MAX_SECRET_TTL",
    "SECRET_NAME_PATTERN",
    "DbSecretsStore",
    "SecretCipher",
    "SecretDecryptionError",
    "SecretsCredentialResolver",
    "SecretsKeyError",
    "SecretsSettingResolver",
    "SecretsStore",
    "generate_key",
    "parse_key",
    "validate_secret",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
