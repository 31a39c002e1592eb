"""Health responses."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

HealthStatus = Literal["healthy", "unhealthy"]


class CheckResult(BaseModel):
    status: HealthStatus
    response_time_ms: float
    error: str | None = None


class HealthReport(BaseModel):
    status: HealthStatus
    timestamp: datetime
    checks: dict[str, CheckResult]


class Liveness(BaseModel):
    status: HealthStatus
    timestamp: datetime
