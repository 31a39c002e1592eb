"""Lambda entry point for /admin/*."""

from llm_orchestrator.api.lambda_entry import make_http_handler
from llm_orchestrator.api.routers import admin

handler = make_http_handler("admin", [admin.router])
