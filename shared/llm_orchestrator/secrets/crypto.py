"""AES-256-GCM for secrets at rest.

AES-GCM rather than Fernet so that the secret's name is bound to its ciphertext as
associated data: a row copied under another name (say, a cheap test key moved into
``OPENAI_API_KEY``) fails to decrypt instead of being served. Blob layout:
``version (1 byte) | nonce (12 bytes) | ciphertext + tag``.
"""

from __future__ import annotations

import base64
import binascii
import os

KEY_BYTES = 32
_VERSION = b"\x01"
_NONCE_BYTES = 12
_AAD_PREFIX = b"llmo-secret:v1:"


class SecretsKeyError(RuntimeError):
    """The secrets key is missing or malformed (a deployment error, not a client one)."""


class SecretDecryptionError(RuntimeError):
    """A stored secret does not decrypt under the configured key (wrong key or tampering)."""


def generate_key() -> str:
    """A fresh key in the text form ``LLMO_SECRETS_KEY`` takes (a Fernet key has it too)."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def parse_key(text: str) -> bytes:
    """``LLMO_SECRETS_KEY`` text → key bytes. The message never echoes the text."""
    stripped = text.strip()
    try:
        key = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError) as exc:
        raise SecretsKeyError("the secrets key is not urlsafe base64") from exc
    if len(key) != KEY_BYTES:
        raise SecretsKeyError(
            f"the secrets key must encode {KEY_BYTES} bytes, not {len(key)}; generate one with"
            " python -c 'from llm_orchestrator.secrets import generate_key; print(generate_key())'"
        )
    return key


class SecretCipher:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise SecretsKeyError(f"the secrets key must be {KEY_BYTES} bytes")
        # Imported here, not at module level: only a process that touches a secret pays for it.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "SecretCipher(<key hidden>)"

    def encrypt(self, name: str, plaintext: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), _aad(name))
        return _VERSION + nonce + sealed

    def decrypt(self, name: str, blob: bytes) -> str:
        from cryptography.exceptions import InvalidTag

        if blob[:1] != _VERSION or len(blob) <= 1 + _NONCE_BYTES:
            raise SecretDecryptionError(f"secret {name!r} has an unknown storage format")
        nonce, sealed = blob[1 : 1 + _NONCE_BYTES], blob[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, sealed, _aad(name)).decode("utf-8")
        except InvalidTag as exc:
            raise SecretDecryptionError(
                f"secret {name!r} does not decrypt with the configured secrets key"
            ) from exc


def _aad(name: str) -> bytes:
    return _AAD_PREFIX + name.encode("utf-8")
