"""Configuration, read once from ``LLMO_*`` environment variables.

Domain code never reads ``os.environ``; it receives what it needs from a ``Settings``
instance built at the edge (CLI, Lambda handler, test fixture).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("llm-orchestrator", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LLMO_", extra="ignore")

    environment: str = "local"
    database_url: str | None = None
    """Unset → an embedded PostgreSQL in ``data_dir`` (local only). The app connects with it:
    with an external database, as a login role that is a member of ``llmo_app``."""
    migration_database_url: str | None = None
    """The owner's URL, used to apply migrations and grant ``llmo_app`` its privileges;
    unset → ``database_url`` (a single role, as before)."""
    database_secret_arn: str | None = None
    """On AWS (set by the CDK stack): the Aurora secret the URL is built from at start-up."""
    database_host: str | None = None
    """Overrides the host in ``database_secret_arn``'s secret (the stack sets the RDS Proxy)."""
    data_dir: Path = Field(default_factory=default_data_dir)
    embedded_shared_buffers: str = Field(default="512MB", pattern=r"^[1-9][0-9]{0,6}(kB|MB|GB)$")
    """The embedded PostgreSQL's ``shared_buffers`` (PostgreSQL units: ``kB``, ``MB``,
    ``GB``); applies when that server starts."""

    shutdown_grace_seconds: int = Field(default=30, ge=1, le=3600)
    """``llmo serve``: how long a stop (SIGTERM, Ctrl-C) waits for requests in flight (an
    ``async: false`` execute waits for its execution) before cutting them off; their
    executions are durable and resume at the next start."""

    workers: int = Field(default=1, ge=1, le=64)
    """``llmo serve``: serving processes (``--workers``). Each runs the executions it
    accepted; one embedded PostgreSQL, migrated once, serves them all."""
    runner_check_seconds: float = Field(default=2.0, gt=0, le=60)
    """How often each serving process looks for executions of a dead one (a worker killed
    with -9) to take over: the bound on how long those wait before they resume."""

    admin_username: str = "admin"
    admin_email: str = "admin@example.com"
    admin_password: SecretStr | None = None
    """Unset on first start → a generated password, printed once."""
    admin_password_arn: str | None = None
    """On AWS: the generated secret the deploy-time bootstrap sets the first admin's password
    from (instead of ``admin_password``)."""

    password_hash_time_cost: int = Field(default=3, ge=1, le=20)
    password_hash_memory_kib: int = Field(default=65536, ge=7168, le=4 * 1024 * 1024)
    password_hash_parallelism: int = Field(default=4, ge=1, le=16)
    """argon2id's cost for new password hashes: passes, memory and lanes. The defaults are
    RFC 9106's low-memory profile (about a quarter of a second of CPU per hash); OWASP's
    minimum is enforced (memory × passes ≥ 7 MiB × 5). Existing hashes keep verifying at the
    cost they were made with."""

    jwt_secret: SecretStr | None = None
    """Unset locally → generated once and kept in ``data_dir``; required on AWS."""
    jwt_secret_arn: str | None = None
    """On AWS: the Secrets Manager secret holding the JWT signing key (instead of the value)."""
    jwt_key_id: str = "k1"
    access_token_ttl_seconds: int = 3600
    refresh_token_ttl_seconds: int = 30 * 24 * 3600

    engine: Literal["local", "stepfunctions"] = "local"
    step_runner_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:llmo-step-runner"
    """The step-runner Lambda the compiled state machines invoke (set by the CDK stack)."""
    vector_runner_arn: str | None = None
    """The Lambda that runs ``vector_upsert``/``vector_search`` steps (the step runner's code
    with the vector SDKs' bundle; set by the CDK stack). Unset → the step runner."""
    states_role_arn: str = "arn:aws:iam::000000000000:role/llmo-states"
    """``stepfunctions`` engine: the role state machines run as (set by the CDK stack)."""
    event_bus: str = "default"
    """EventBridge bus of event-trigger rules and completion events (set by the CDK stack)."""
    events_function_arn: str = "arn:aws:lambda:us-east-1:000000000000:function:llmo-events"
    """The ``events`` Lambda that schedules and rules invoke (set by the CDK stack)."""
    scheduler_role_arn: str = "arn:aws:iam::000000000000:role/llmo-scheduler"
    """The role EventBridge Scheduler assumes to invoke the ``events`` Lambda."""
    schedule_group: str = "default"
    """The EventBridge Scheduler schedule group that trigger schedules are created in."""
    secrets_backend: Literal["db", "aws"] = "db"
    secrets_prefix: str = "llmo/"
    """``aws`` backend: secret ``KEY`` is the Secrets Manager secret ``<prefix>KEY``."""
    secrets_cache_seconds: float = 60.0
    """How long a process serves a secret (or its absence) before reading again; a write
    through the process itself applies at once (``secrets/cache.py``). 0 turns it off."""
    secrets_cache_size: int = 256
    """Secret names a process keeps cached at most."""
    secrets_key: SecretStr | None = None
    """Key of the ``db`` secrets backend: urlsafe base64 of 32 bytes. Unset locally → generated
    once into ``data_dir``; required outside ``local`` as soon as a secret is stored or read."""
    secrets_key_arn: str | None = None
    """On AWS: the Secrets Manager secret holding ``secrets_key`` (instead of the value)."""

    trusted_proxies: str = ""
    """Peers whose ``X-Forwarded-For`` is believed (addresses or CIDR networks, comma
    separated). Empty: nobody's; the client is the TCP peer (on Lambda, API Gateway's
    ``sourceIp``)."""

    audit_hmac_key: SecretStr | None = None
    """Key of the audit chain's HMAC (≥ 32 bytes), kept out of the database. Unset locally →
    generated once into ``data_dir``; on AWS → the ``AUDIT_HMAC_KEY`` secret of the secrets
    backend; otherwise required."""
    audit_anchor_interval_seconds: float = Field(default=300.0, ge=0)
    """How often a local server anchors the audit chain's head outside the database (0: only
    on demand and at shutdown)."""

    rate_limits_enabled: bool = True
    rate_limit_enterprise_per_minute: int = 6_000
    rate_limit_enterprise_per_hour: int = 200_000
    rate_limit_enterprise_per_day: int = 2_000_000

    default_monthly_budget_usd: float | None = Field(None, ge=0)
    """Monthly USD budget of every user an admin has set none for (unset: no budget)."""

    db_pool_min_size: int = 1
    db_pool_max_size: int = 10
    db_statement_timeout_seconds: float = Field(default=3.0, gt=0, le=300)
    """The longest one use of a connection may take: the server cancels a slower statement,
    and a server that does not answer at all is cut off after it (503)."""
    db_pool_timeout_seconds: float = Field(default=3.0, gt=0, le=300)
    """The longest a request waits for a pooled connection before answering 503."""
    db_connect_timeout_seconds: int = Field(default=2, ge=2, le=300)
    """The longest a new connection may take (libpq counts whole seconds, at least 2)."""

    @model_validator(mode="after")
    def _password_hash_cost_at_least_owasp(self) -> Settings:
        if self.password_hash_memory_kib * self.password_hash_time_cost < 7 * 1024 * 5:
            raise ValueError(
                "password_hash_memory_kib × password_hash_time_cost is below OWASP's minimum"
                " for argon2id (7168 KiB × 5 passes, or 19456 KiB × 2)"
            )
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_trusted_proxies(cls, value: str) -> str:
        import ipaddress

        for entry in filter(None, (e.strip() for e in value.split(","))):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(f"not an IP address or network: {entry!r}") from exc
        return value

    @property
    def is_local(self) -> bool:
        return self.environment == "local"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
