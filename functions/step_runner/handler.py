"""Lambda entry point for the step runner, invoked by the state machines' Tasks: every step
but ``vector_upsert`` and ``vector_search`` (those go to the vector runner), and the park
and failure-recording Tasks of every step."""

from llm_orchestrator.step_runner_lambda import make_step_runner_handler

handler = make_step_runner_handler()
