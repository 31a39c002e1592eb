"""The client commands of ``llmo`` (everything but ``serve``, ``migrate`` and ``compile``).

Registering them imports only ``argparse``; a command's module, the SDK, ``httpx`` and
``rich`` load when that command runs. Nothing here imports server code.
"""

from __future__ import annotations

import argparse

from llm_orchestrator.client.cli.parser import add_client_commands

__all__ = ["add_client_commands", "run_client_command"]


def run_client_command(args: argparse.Namespace) -> int:
    from llm_orchestrator.client.cli.app import dispatch

    return dispatch(args)
