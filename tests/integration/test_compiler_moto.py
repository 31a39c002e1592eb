"""Every compiled definition is accepted by Step Functions' CreateStateMachine (moto).

moto validates definitions with its ASL parser only when its execution simulator is on,
so the tests turn it on; a deliberately broken definition proves the check is live.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from llm_orchestrator.compiler import compile_workflow, to_json
from llm_orchestrator.workflows import WorkflowDefinition, parse_definition
from tests.compiler_support import (
    RUNNER,
    SHAPES,
    assert_asl_subset,
    assert_respects_dependencies,
    definition,
    step,
    walk,
)
from tests.moto_support import REGION, mocked_aws
from tests.samples import RAG_WORKFLOW

ROLE = "arn:aws:iam::123456789012:role/sfn"
ONE_MB = 1024 * 1024


@pytest.fixture
def sfn(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with mocked_aws(monkeypatch):
        yield boto3.client("stepfunctions", region_name=REGION)


def create(sfn: Any, name: str, defn: WorkflowDefinition) -> str:
    definition_text = to_json(compile_workflow(defn, step_runner_arn=RUNNER))
    response = sfn.create_state_machine(
        name=name, definition=definition_text, roleArn=ROLE, type="STANDARD"
    )
    described = sfn.describe_state_machine(stateMachineArn=response["stateMachineArn"])
    assert described["definition"] == definition_text
    return definition_text


def random_dag(size: int, seed: int) -> WorkflowDefinition:
    """Each step depends on up to three of the 50 steps before it: wide and deep at once."""
    rng = random.Random(seed)
    steps = []
    for index in range(size):
        window = range(max(0, index - 50), index)
        deps = rng.sample(window, min(len(window), rng.randint(0, 3)))
        steps.append(
            step(
                f"step-{index:04d}",
                *(f"step-{d:04d}" for d in sorted(deps)),
                retry={"max_attempts": rng.randint(1, 10), "backoff_seconds": rng.randint(1, 90)},
            )
        )
    return definition(*steps)


def test_moto_rejects_a_broken_definition(sfn: Any) -> None:
    broken = '{"StartAt": "x", "States": {"x": {"Type": "Bogus"}}}'

    with pytest.raises(ClientError, match="ASLParserException"):
        sfn.create_state_machine(name="broken", definition=broken, roleArn=ROLE)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_compiled_shapes_are_accepted(sfn: Any, shape: str) -> None:
    create(sfn, f"wf-{shape.replace('_', '-')}", SHAPES[shape])


def test_retries_timeouts_and_overrides_are_accepted(sfn: Any) -> None:
    defn = definition(
        step("a", timeout_seconds=30, retry={"max_attempts": 1, "backoff_seconds": 300}),
        step("b", "a", retry={"max_attempts": 10, "backoff_rate": 1.5}),
        step("c", "a", timeout_seconds=86_400),
        step("d", "b", "c"),
        timeout_seconds=31_536_000,
    )

    create(sfn, "wf-settings", defn)


def test_the_spec_rag_workflow_is_accepted(sfn: Any) -> None:
    rag = parse_definition(RAG_WORKFLOW)

    create(sfn, "rag-qa", rag)


def test_an_ingest_then_rag_workflow_is_accepted(sfn: Any) -> None:
    ingest = parse_definition(
        {
            "name": "ingest-and-ask",
            "steps": [
                *RAG_WORKFLOW["steps"],
                {
                    "id": "store",
                    "type": "vector_upsert",
                    "database": "pgvector",
                    "index": "kb",
                    "vectors": "{{query_embedding}}",
                    "documents": "{{docs}}",
                    "depends_on": ["embed_query"],
                },
            ],
        }
    )

    create(sfn, "ingest-and-ask", ingest)


def test_deeply_nested_parallels_are_accepted(sfn: Any) -> None:
    steps = [step("s0")]
    for round_ in range(1, 20):
        steps.extend([step(f"p{round_}"), step(f"s{round_}", f"s{round_ - 1}", f"p{round_}")])

    create(sfn, "wf-deep", definition(*steps))


@pytest.mark.slow
def test_a_1000_step_random_dag_is_accepted_and_under_1_mb(sfn: Any) -> None:
    defn = random_dag(1000, seed=1000)

    text = create(sfn, "wf-1000", defn)

    assert len(text.encode()) < ONE_MB
    asl = compile_workflow(defn, step_runner_arn=RUNNER)
    assert_asl_subset(asl)
    assert_respects_dependencies(defn, walk(asl))


@pytest.mark.slow
def test_a_1000_step_chain_is_accepted_and_under_1_mb(sfn: Any) -> None:
    chain = [step(f"step-{i:04d}", *([f"step-{i - 1:04d}"] if i else [])) for i in range(1000)]

    text = create(sfn, "wf-chain-1000", definition(*chain))

    assert len(text.encode()) < ONE_MB
