"""Workflow definition → Amazon States Language. Pure functions, no I/O."""

from llm_orchestrator.compiler.state_machine import compile_workflow, to_json

__all__ = ["compile_workflow", "to_json"]
