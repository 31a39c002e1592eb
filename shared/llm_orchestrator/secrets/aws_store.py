"""The ``aws`` secrets backend: AWS Secrets Manager, read through Powertools ``parameters``.

A secret ``KEY`` is the Secrets Manager secret ``<prefix>KEY`` (``llmo/KEY`` by default).
Secrets Manager has no expiry, so a secret stored with a TTL is kept as a small JSON
envelope, ``{"llmo": 1, "value": …, "expires_at": "<ISO 8601>" | null}``, and tagged
``llmo:expires-at``; an expired one is never served. A secret created outside the API (a
plain string in the console) is served as it is and never expires.

Reads go through the secrets read cache (``secrets/cache.py``), so a step does not pay a
Secrets Manager round trip per credential. A write through this process drops its entry at
once; another process (another Lambda container) sees the new value within
``cache_seconds``.

boto3 and Powertools' parameters utility are imported on first use only. Values are never
logged: botocore's request and response logging is held at INFO or above, because at DEBUG
it prints request bodies and responses verbatim.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from llm_orchestrator.errors import ServiceUnavailable
from llm_orchestrator.secrets.base import validate_secret
from llm_orchestrator.secrets.cache import Fetched, SecretCache

log = logging.getLogger(__name__)

ENVELOPE_MARK = "llmo"
EXPIRES_TAG = "llmo:expires-at"
MANAGED_TAG = "llmo:managed"
_BODY_LOGGERS = ("botocore.endpoint", "botocore.parsers", "botocore.httpchecksum")


class SecretsBackendError(ServiceUnavailable):
    """Secrets Manager refused or failed a call (503); the message never holds a value."""


class SecretsManagerStore:
    backend = "aws"

    def __init__(
        self,
        *,
        prefix: str,
        clock: Callable[[], datetime],
        cache_size: int = 256,
        cache_seconds: float = 60.0,
        client: Any = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._prefix = prefix
        self._now = clock
        self._client = client
        self._provider: Any = None
        self.cache = SecretCache(cache_size, cache_seconds, monotonic)

    def __repr__(self) -> str:
        return f"SecretsManagerStore(prefix={self._prefix!r})"

    # -- the SecretsStore port ----------------------------------------------------------

    async def put(self, name: str, value: str, *, ttl: timedelta | None = None) -> None:
        validate_secret(name, value, ttl)
        expires_at = self._now() + ttl if ttl is not None else None
        await asyncio.to_thread(self._put, name, value, expires_at)
        log.info(
            "stored secret %s in Secrets Manager (expires %s)",
            name,
            expires_at.isoformat() if expires_at else "never",
        )

    async def get(self, name: str) -> str | None:
        return (await self.get_many([name])).get(name)

    async def get_many(self, names: Sequence[str]) -> dict[str, str]:
        return await self.cache.read_through(names, self._fetch_many, self._now())

    async def _fetch_many(self, names: list[str]) -> Fetched:
        fetched: Fetched = {}
        for name in names:
            value, expires_at = await asyncio.to_thread(self._fetch, name)
            if value is not None:
                fetched[name] = (value, expires_at)
        return fetched

    async def names(self) -> list[str]:
        return sorted(await asyncio.to_thread(self._list_names, self._now()))

    # -- Secrets Manager (blocking; run in a worker thread) --------------------------------

    def _sm(self) -> Any:
        if self._client is None:
            import boto3

            _quiet_body_logging()
            self._client = boto3.client("secretsmanager")
        return self._client

    def _secrets_provider(self) -> Any:
        if self._provider is None:
            from aws_lambda_powertools.utilities.parameters import SecretsProvider

            self._provider = SecretsProvider(boto3_client=self._sm())
        return self._provider

    def _put(self, name: str, value: str, expires_at: datetime | None) -> None:
        from botocore.exceptions import ClientError

        secret_id = self._prefix + name
        body = json.dumps(
            {
                ENVELOPE_MARK: 1,
                "value": value,
                "expires_at": expires_at.isoformat() if expires_at else None,
            }
        )
        tags = [
            {"Key": MANAGED_TAG, "Value": "true"},
            {"Key": EXPIRES_TAG, "Value": expires_at.isoformat() if expires_at else "never"},
        ]
        client = self._sm()
        # Whatever happens, this process must not serve what it cached before the write.
        self.cache.drop(name)
        try:
            try:
                client.create_secret(Name=secret_id, SecretString=body, Tags=tags)
                return
            except ClientError as exc:
                code = _code(exc)
                if code == "InvalidRequestException":
                    # Scheduled for deletion: bring it back, then overwrite it.
                    client.restore_secret(SecretId=secret_id)
                elif code != "ResourceExistsException":
                    raise
            client.put_secret_value(SecretId=secret_id, SecretString=body)
            client.tag_resource(SecretId=secret_id, Tags=tags)
        except ClientError as exc:
            raise SecretsBackendError(
                f"Secrets Manager refused to store secret '{name}': {_code(exc)}"
            ) from None
        finally:
            self.cache.drop(name)

    def _fetch(self, name: str) -> tuple[str | None, datetime | None]:
        from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError
        from botocore.exceptions import ClientError

        try:
            # Powertools' own cache is off (max_age 0 stores nothing): ours is bounded and
            # a write clears it.
            raw = self._secrets_provider().get(self._prefix + name, max_age=0, force_fetch=True)
        except GetParameterError as exc:
            # Powertools wraps the boto error while handling it (context, not cause).
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ClientError) and _code(cause) in (
                "ResourceNotFoundException",
                "InvalidRequestException",  # scheduled for deletion
            ):
                return None, None
            code = _code(cause) if isinstance(cause, ClientError) else type(cause).__name__
            raise SecretsBackendError(
                f"Secrets Manager could not read secret '{name}': {code}"
            ) from None
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", errors="replace")
        return _unwrap(str(raw))

    def _list_names(self, now: datetime) -> list[str]:
        names: list[str] = []
        paginator = self._sm().get_paginator("list_secrets")
        for page in paginator.paginate(Filters=[{"Key": "name", "Values": [self._prefix]}]):
            for entry in page.get("SecretList", []):
                full = entry.get("Name", "")
                if not full.startswith(self._prefix) or entry.get("DeletedDate"):
                    continue
                tags = {tag["Key"]: tag["Value"] for tag in entry.get("Tags", [])}
                expires = tags.get(EXPIRES_TAG, "never")
                if expires != "never" and datetime.fromisoformat(expires) <= now:
                    continue
                names.append(full[len(self._prefix) :])
        return names


def _unwrap(raw: str) -> tuple[str | None, datetime | None]:
    try:
        document = json.loads(raw)
    except ValueError:
        return raw, None
    if not isinstance(document, dict) or document.get(ENVELOPE_MARK) != 1:
        return raw, None
    value = document.get("value")
    expires = document.get("expires_at")
    return (
        value if isinstance(value, str) else None,
        datetime.fromisoformat(expires) if isinstance(expires, str) else None,
    )


def _code(exc: Any) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", "Error"))


def _quiet_body_logging() -> None:
    for name in _BODY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.INFO:
            logger.setLevel(logging.INFO)
