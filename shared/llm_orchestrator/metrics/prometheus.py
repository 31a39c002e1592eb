"""``GET /metrics``: Prometheus text exposition (format 0.0.4) via ``prometheus_client``.

Each scrape renders a fresh ``CollectorRegistry`` from a database snapshot plus this
process's HTTP counter; nothing is registered in the library's global registry, so several
apps in one process (tests, the local server) never collide.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from llm_orchestrator.executions.status import ExecutionStatus
from llm_orchestrator.metrics.http import HttpRequestMetrics

if TYPE_CHECKING:
    from llm_orchestrator.store.metrics import MetricsSnapshot
    from llm_orchestrator.store.usage import UsageTotals

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
STEP_DURATION_BUCKETS_SECONDS: tuple[float, ...] = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
"""From a cache hit to a long generation; steps are far slower than HTTP requests."""


class SnapshotCollector(Collector):
    """Database-backed families: right across every process and Lambda container."""

    def __init__(self, snapshot: MetricsSnapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        snap = self._snapshot
        yield CounterMetricFamily(
            "orchestrator_workflows", "Total number of workflows", value=snap.workflows_total
        )
        executions = CounterMetricFamily(
            "orchestrator_executions", "Total workflow executions", labels=["status"]
        )
        # Every known status, zeros included, so each series exists from the first scrape;
        # a status outside the list (a newer schema) is still reported.
        statuses: list[str] = list(ExecutionStatus)
        statuses += sorted(s for s in snap.executions_by_status if s not in statuses)
        for status in statuses:
            executions.add_metric([status], snap.executions_by_status.get(status, 0))
        yield executions
        yield self._durations()
        tokens = CounterMetricFamily(
            "orchestrator_provider_tokens",
            "Tokens exchanged with LLM and embedding providers",
            labels=["provider", "direction"],
        )
        for (provider, direction), count in sorted(snap.tokens.items()):
            tokens.add_metric([provider, direction], count)
        yield tokens

    def _durations(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(
            "orchestrator_step_duration_seconds",
            "Duration of finished step runs",
            labels=["step_type", "provider"],
        )
        for series in self._snapshot.step_durations:
            buckets = [
                (_bound(le), float(n))
                for le, n in zip(
                    STEP_DURATION_BUCKETS_SECONDS, series.cumulative_counts, strict=True
                )
            ]
            buckets.append(("+Inf", float(series.count)))
            family.add_metric([series.step_type, series.provider], buckets, series.sum_seconds)
        return family


class UsageCollector(Collector):
    """Tokens and USD per provider and model, from the ledger of every provider call."""

    def __init__(self, usage: UsageTotals) -> None:
        self._usage = usage

    def collect(self) -> Iterator[Metric]:
        tokens = CounterMetricFamily(
            "orchestrator_tokens",
            "Tokens of every provider call (retries and fallbacks too), by provider and model",
            labels=["provider", "model", "direction"],
        )
        for (provider, model, direction), count in sorted(self._usage.tokens.items()):
            tokens.add_metric([provider, model, direction], count)
        yield tokens
        cost = CounterMetricFamily(
            "orchestrator_cost_usd",
            "USD spent on provider calls whose price is known (GET /admin/pricing)",
            labels=["provider", "model"],
        )
        for (provider, model), usd in sorted(self._usage.cost_usd.items()):
            cost.add_metric([provider, model], usd)
        yield cost


class HttpRequestCollector(Collector):
    """``orchestrator_http_requests_total{route,status}`` from this process's counts only."""

    def __init__(self, http: HttpRequestMetrics) -> None:
        self._http = http

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "orchestrator_http_requests",
            "HTTP requests served by this server (per instance: a process, or every worker of"
            " one llmo serve), by route template and status",
            labels=["route", "status"],
        )
        for (route, status), count in sorted(self._http.counts().items()):
            family.add_metric([route, str(status)], count)
        yield family


def render(
    snapshot: MetricsSnapshot,
    http: HttpRequestMetrics | None,
    usage: UsageTotals | None = None,
) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    if usage is not None:
        registry.register(UsageCollector(usage))
    if http is not None:
        registry.register(HttpRequestCollector(http))
    return generate_latest(registry)


def _bound(seconds: float) -> str:
    # The form prometheus_client itself writes (``0.5``, ``1.0``), so series from either agree.
    return repr(float(seconds))
