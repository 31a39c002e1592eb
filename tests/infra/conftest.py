"""Synthesize the CDK app once per test session (jsii start-up and synth take most of a
minute on a busy machine), with small placeholder directories instead of the real function
code and dependency bundles: these tests check the wiring, not the bundles."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from infra import constants  # noqa: E402


@dataclass
class Synthesized:
    outdir: Path
    templates: dict[str, dict[str, Any]]

    def resources(self, stack: str, kind: str) -> dict[str, dict[str, Any]]:
        found = self.templates[stack]["Resources"].items()
        return {logical_id: r for logical_id, r in found if r["Type"] == kind}

    def path_of(self, stack: str, logical_id: str) -> str:
        return str(self.templates[stack]["Resources"][logical_id]["Metadata"]["aws:cdk:path"])

    def functions(self) -> dict[str, str]:
        """Function name (``auth``, ``step_runner``, …) → its logical id."""
        found = {}
        for logical_id in self.resources(constants.APP_STACK, "AWS::Lambda::Function"):
            path = self.path_of(constants.APP_STACK, logical_id)
            found[path.split("/")[-2]] = logical_id
        return found


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Synthesized]:
    from infra.app import build_app
    from infra.constructs.functions import FunctionSources

    root = tmp_path_factory.mktemp("infra")
    functions_dir = root / "functions"
    for name in constants.FUNCTIONS:
        (functions_dir / name).mkdir(parents=True)
        (functions_dir / name / "handler.py").write_text(f"# placeholder for {name}\n")
    outdir = root / "cdk.out"
    sources = FunctionSources(functions_dir=functions_dir, layers_dir=root / "no-layers")

    build_app(outdir, sources).synth()

    templates = {
        stack: json.loads((outdir / f"{stack}.template.json").read_text())
        for stack in (constants.DATA_STACK, constants.APP_STACK)
    }
    yield Synthesized(outdir=outdir, templates=templates)
