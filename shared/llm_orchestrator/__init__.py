"""LLM Orchestrator: durable multi-step LLM workflows behind one REST API."""

__version__ = "0.1.0"
