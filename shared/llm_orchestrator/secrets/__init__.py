"""Secrets: the store port, the encrypted PostgreSQL backend, and provider credentials.

Values never leave a store except towards the adapter that needs them: responses, log
lines, audit events and execution state carry secret names only.
"""

from llm_orchestrator.secrets.base import (
    MAX_SECRET_TTL,
    SECRET_NAME_PATTERN,
    SecretsStore,
    validate_secret,
)
from llm_orchestrator.secrets.credentials import SecretsCredentialResolver, SecretsSettingResolver
from llm_orchestrator.secrets.crypto import (
    SecretCipher,
    SecretDecryptionError,
    SecretsKeyError,
    generate_key,
    parse_key,
)
from llm_orchestrator.secrets.db_store import DbSecretsStore

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
