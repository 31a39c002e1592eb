"""Bodies of the system endpoints of the admin group: stats, secrets and configuration."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator

from llm_orchestrator.api.schemas.common import StrictModel
from llm_orchestrator.secrets.base import (
    MAX_SECRET_TTL,
    MAX_SECRET_VALUE_CHARS,
    SECRET_NAME_PATTERN,
)

if TYPE_CHECKING:
    from llm_orchestrator.metrics.stats import SystemStats


class SystemStatsPublic(BaseModel):
    total_workflows: int
    total_executions: int
    executions_by_status: dict[str, int]
    active_users: int = Field(
        description="Users who logged in or used one of their API keys in the last 30 days"
    )
    api_keys_count: int = Field(description="API keys neither revoked nor expired")
    avg_execution_time_ms: float = Field(description="Mean duration of completed executions")
    uptime_seconds: int = Field(description="Uptime of the process (Lambda container) answering")
    spend_today_usd: float = Field(
        description="USD of provider calls since 00:00 UTC today (calls with a known price)"
    )
    spend_month_usd: float = Field(
        description="USD of provider calls since the first of this month, 00:00 UTC"
    )

    @classmethod
    def of(cls, stats: SystemStats) -> SystemStatsPublic:
        return cls(
            total_workflows=stats.total_workflows,
            total_executions=stats.total_executions,
            executions_by_status=stats.executions_by_status,
            active_users=stats.active_users,
            api_keys_count=stats.api_keys_count,
            avg_execution_time_ms=stats.avg_execution_time_ms,
            uptime_seconds=stats.uptime_seconds,
            spend_today_usd=stats.spend_today_usd,
            spend_month_usd=stats.spend_month_usd,
        )


class SetSecretRequest(StrictModel):
    key: str = Field(
        pattern=SECRET_NAME_PATTERN,
        description="Name, e.g. OPENAI_API_KEY: the same names as the providers' variables",
    )
    # SecretStr: the value never shows in a repr, a log line or a validation error.
    value: SecretStr = Field(min_length=1, max_length=MAX_SECRET_VALUE_CHARS)
    ttl_seconds: int | None = Field(
        default=None,
        ge=1,
        le=int(MAX_SECRET_TTL.total_seconds()),
        description="Unset: the secret never expires",
    )

    @field_validator("value")
    @classmethod
    def _not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("must not be blank")
        return value

    @property
    def ttl(self) -> timedelta | None:
        return timedelta(seconds=self.ttl_seconds) if self.ttl_seconds is not None else None


class SetSecretResponse(BaseModel):
    success: Literal[True] = True
    key: str


class Features(BaseModel):
    state_persistence: bool
    audit_logging: bool
    rate_limiting: bool
    engine: str
    secrets_backend: str


class SystemConfig(BaseModel):
    version: str
    environment: str
    features: Features
