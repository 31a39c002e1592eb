"""Lambda entry point for EventBridge: Step Functions status changes, trigger schedules and
event rules (see ``llm_orchestrator.events_lambda``)."""

from llm_orchestrator.events_lambda import make_events_handler

handler = make_events_handler()
