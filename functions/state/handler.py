"""Lambda entry point for /state/*."""

from llm_orchestrator.api.lambda_entry import make_http_handler
from llm_orchestrator.api.routers import state

handler = make_http_handler("state", [state.router])
