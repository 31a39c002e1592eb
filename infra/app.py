"""The CDK app: ``python infra/app.py`` (``make synth``) or ``cdk deploy`` (via cdk.json).

Composes the two stacks and runs cdk-nag's AWS Solutions checks on both. Synthesizes with
no AWS credentials and no network into ``cdk.out/`` at the repository root (set
``LLMO_CDK_OUTDIR`` for another directory). The Lambda layers come from ``make layers``;
without them the template carries placeholder layers and a warning says so.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# Run as a script, Python puts infra/ first on sys.path, where infra/constructs would shadow
# the CDK's own `constructs` package: import from the repository root instead.
_ROOT = Path(__file__).resolve().parents[1]
if sys.path and Path(sys.path[0]).resolve() == _ROOT / "infra":
    sys.path[0] = str(_ROOT)
# jsii prints a multi-line banner on stderr when Node's version is past its end of life
# (Node 20 here); it is only a banner, the run is unaffected. Known-broken versions still warn.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from aws_cdk import App, Validations  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402

from infra import constants  # noqa: E402
from infra.constructs.functions import FunctionSources  # noqa: E402
from infra.stacks.application import ApplicationStack  # noqa: E402
from infra.stacks.data import DataStack  # noqa: E402


def feature_flags() -> dict[str, object]:
    """cdk.json's context: the CDK's recommended feature flags for the aws-cdk-lib version
    pinned in pyproject.toml, as ``cdk init`` writes them. The CDK CLI passes them to the app
    itself; ``python infra/app.py`` and the tests read them here, so every synth is the same."""
    document = json.loads((_ROOT / "cdk.json").read_text(encoding="utf-8"))
    return dict(document.get("context", {}))


def build_app(outdir: Path, sources: FunctionSources | None = None) -> App:
    # Path metadata (as the CDK CLI adds it) lets findings and tests name constructs.
    app = App(
        outdir=str(outdir),
        context={**feature_flags(), "aws:cdk:enable-path-metadata": True},
    )
    data = DataStack(
        app, constants.DATA_STACK, description="LLM Orchestrator: network, database, secrets"
    )
    ApplicationStack(
        app,
        constants.APP_STACK,
        data=data,
        sources=sources or FunctionSources(),
        description="LLM Orchestrator: API, functions, orchestration, observability",
    )
    # Acknowledged findings are also written into each resource's metadata, with their
    # reasons: the template itself then shows what was accepted and why.
    Validations.of(app).add_plugins(
        AwsSolutionsChecks(app, write_suppressions_to_cloud_formation=True)
    )
    return app


def main() -> int:
    outdir = Path(
        os.environ.get("CDK_OUTDIR") or os.environ.get("LLMO_CDK_OUTDIR") or constants.OUTDIR
    )
    build_app(outdir).synth()
    print(f"synthesized into {outdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
