"""Lambda entry point for /auth/* (login, refresh, API keys)."""

from llm_orchestrator.api.lambda_entry import make_http_handler
from llm_orchestrator.api.routers import auth

handler = make_http_handler("auth", [auth.router])
