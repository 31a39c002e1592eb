"""What goes into each Lambda dependency bundle, derived from ``pyproject.toml``.

One bundle per function kind, so no Lambda carries SDKs it never imports: the API-group,
events and migrate functions get ``api``; the step runner, which calls the provider SDKs
(``llm`` and ``embed`` steps), gets ``step_runner``; the vector runner, the same handler
code for ``vector_upsert`` and ``vector_search`` steps, gets ``vector_runner`` with the
vector database SDKs. All SDKs in one bundle would not fit: see the README's sizes.
Each bundle is the package's base dependencies plus the extras named here, resolved for
the Lambda platform, minus what the Lambda Python runtime already provides. The dependency
lists themselves live only in ``pyproject.toml``; nothing here or in the build repeats
them, so the two cannot drift.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
PROJECT = "llm-orchestrator"

BUNDLE_EXTRAS: dict[str, tuple[str, ...]] = {
    "api": ("lambda",),
    "step_runner": ("lambda", "providers"),
    "vector_runner": ("lambda", "vectors"),
}
"""Function kind → the extras its bundle installs (on top of the base dependencies)."""

RUNNER_FUNCTIONS = frozenset({"step_runner", "vector_runner"})
"""The functions whose bundle is their own kind; every other function gets ``api``."""

RUNTIME_PROVIDED = frozenset({"boto3", "botocore", "s3transfer"})
"""Distributions the Lambda Python runtime ships; left out of every bundle."""

MAX_BUNDLE_BYTES = 200_000_000
"""A bundle past this fails the build: Lambda allows 250 MB unzipped for code and layers
together, and the function code and the runtime's own margin need the rest."""

LAMBDA_PLATFORM = "manylinux2014_aarch64"
LAMBDA_PYTHON = "3.13"


def normalize(name: str) -> str:
    """PEP 503 name normalization (``Prometheus_Client`` → ``prometheus-client``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def function_names() -> list[str]:
    """Every ``functions/<name>/handler.py``, by name."""
    return sorted(path.parent.name for path in (ROOT / "functions").glob("*/handler.py"))


def kind_of(function: str) -> str:
    return function if function in RUNNER_FUNCTIONS else "api"


def parse_requirement(requirement: str) -> tuple[str, tuple[str, ...]]:
    """``"psycopg[binary]>=3.2"`` → ``("psycopg", ("binary",))``."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?", requirement)
    if not match:
        raise ValueError(f"cannot parse requirement {requirement!r}")
    extras = tuple(e.strip() for e in (match.group(2) or "").split(",") if e.strip())
    return normalize(match.group(1)), extras


def requirements(extras: tuple[str, ...]) -> list[str]:
    """The base dependencies plus ``extras`` (self-references expanded), as written in
    ``pyproject.toml``, in a stable order without duplicates."""
    project = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    result: list[str] = []
    seen_extras: set[str] = set()

    def add(requirement: str) -> None:
        name, nested = parse_requirement(requirement)
        if name == PROJECT:
            for extra in nested:
                expand(extra)
        elif requirement not in result:
            result.append(requirement)

    def expand(extra: str) -> None:
        if extra in seen_extras:
            return
        if extra not in optional:
            raise KeyError(f"pyproject.toml has no extra {extra!r}")
        seen_extras.add(extra)
        for requirement in optional[extra]:
            add(requirement)

    for requirement in project.get("dependencies", []):
        add(requirement)
    for extra in extras:
        expand(extra)
    return result


def bundle_requirements(kind: str) -> list[str]:
    return requirements(BUNDLE_EXTRAS[kind])
