"""What the CLI keeps between commands, in the user's config directory (mode 0600): the
login session, and which workflow each execution and checkpoint it has seen belongs to."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

CONFIG_DIR_ENV = "LLMO_CONFIG_DIR"
SESSION_FILE = "session.json"
INDEX_FILE = "index.json"
INDEX_LIMIT = 500
"""Executions and checkpoints remembered; the oldest are forgotten first."""


def config_dir() -> Path:
    configured = os.environ.get(CONFIG_DIR_ENV)
    if configured:
        return Path(configured)
    import platformdirs

    return Path(platformdirs.user_config_dir("llm-orchestrator", appauthor=False))


def _read(name: str) -> dict[str, Any]:
    try:
        data = json.loads((config_dir() / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(name: str, data: dict[str, Any]) -> None:
    """Atomically, and readable by the user alone (it holds tokens)."""
    directory = config_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
        os.replace(tmp, directory / name)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_session() -> dict[str, Any]:
    return _read(SESSION_FILE)


def save_session(session: dict[str, Any]) -> None:
    _write(SESSION_FILE, session)


def delete_session() -> bool:
    try:
        (config_dir() / SESSION_FILE).unlink()
    except FileNotFoundError:
        return False
    return True


def remember(kind: str, ids: list[str], workflow_id: str) -> None:
    """Note that ``ids`` (executions or checkpoints) belong to ``workflow_id``."""
    index = _read(INDEX_FILE)
    entries: dict[str, str] = dict(index.get(kind) or {})
    for item in ids:
        entries.pop(item, None)
        entries[item] = workflow_id
    index[kind] = dict(list(entries.items())[-INDEX_LIMIT:])
    _write(INDEX_FILE, index)


def workflow_of(kind: str, item: str) -> str | None:
    value = (_read(INDEX_FILE).get(kind) or {}).get(item)
    return value if isinstance(value, str) else None
