"""Lambda entry point for the step runner, invoked by every Task of the state machines."""

from llm_orchestrator.step_runner_lambda import make_step_runner_handler

handler = make_step_runner_handler()
