"""Lambda entry point for /health* and /metrics (public)."""

from llm_orchestrator.api.lambda_entry import make_http_handler
from llm_orchestrator.api.routers import monitoring

handler = make_http_handler("monitoring", [monitoring.router])
