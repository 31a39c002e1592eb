"""Lambda entry point for /audit/*."""

from llm_orchestrator.api.lambda_entry import make_http_handler
from llm_orchestrator.api.routers import audit

handler = make_http_handler("audit", [audit.router])
