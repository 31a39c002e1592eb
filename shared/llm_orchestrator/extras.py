"""Optional parts of the distribution and the error that names the one to install.

``pip install llm-orchestrator`` brings the SDK and the command line only; the server, the
embedded database and the AWS adapters come with extras (see ``pyproject.toml``). A command
that needs a missing part fails with one line saying which extra to install.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class MissingExtra(RuntimeError):
    """A module that only an install extra brings is not installed."""

    def __init__(self, extra: str, module: str, needed_for: str) -> None:
        self.extra = extra
        self.module = module
        super().__init__(
            f"{needed_for} needs the '{extra}' extra (module '{module}' is not installed): "
            f"pip install 'llm-orchestrator[{extra}]'"
        )


def importing(extra: str, needed_for: str, load: Callable[[], T]) -> T:
    """Run ``load`` (which imports something); a third-party module missing → MissingExtra.

    A missing module of our own package is a broken install, not a missing extra, so it
    propagates unchanged.
    """
    try:
        return load()
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if not missing or missing == "llm_orchestrator":
            raise
        raise MissingExtra(extra, missing, needed_for) from exc
