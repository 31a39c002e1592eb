"""Deployed only where functions/<name>/handler.py did not exist at synth time."""

from typing import Any


def handler(event: Any, context: Any) -> Any:
    raise RuntimeError("this function was synthesized without its handler; redeploy")
