"""Compile a 1,000-step workflow: time and definition size against their budgets.

Run with ``python -m tests.perf.bench_compiler``. Budgets: compiling (to canonical JSON)
takes at most 100 ms, and the definition stays under Step Functions' 1 MB hard quota,
both for a random DAG and for a plain chain (the largest shape per step). Exits non-zero
when a budget is exceeded.
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

from llm_orchestrator.compiler import compile_workflow, to_json
from llm_orchestrator.workflows import WorkflowDefinition, parse_definition

STEPS = 1000
RUNS = 9
SEED = 20_251_114
RUNNER = "arn:aws:lambda:us-east-1:123456789012:function:llmo-step-runner"
COMPILE_BUDGET_MS = 100.0
SIZE_BUDGET_BYTES = 1024 * 1024


def random_workflow(steps: int, seed: int) -> dict[str, Any]:
    """Each step depends on up to three of the 50 before it, as a wide, deep pipeline would."""
    rng = random.Random(seed)
    kinds = ("llm", "embed", "vector_search")
    listed = []
    for index in range(steps):
        window = range(max(0, index - 50), index)
        deps = sorted(rng.sample(window, min(len(window), rng.randint(0, 3))))
        listed.append(
            {
                "id": f"step-{index:04d}",
                "depends_on": [f"step-{d:04d}" for d in deps],
                "output": [f"out_{index}"],
                **_fields(kinds[index % 3], [f"out_{d}" for d in deps]),
            }
        )
    return {"name": "bench-1000", "version": "1.0", "steps": listed}


def _fields(kind: str, inputs: list[str]) -> dict[str, Any]:
    text = " ".join(f"{{{{{name}}}}}" for name in inputs) or "{{question}}"
    if kind == "llm":
        return {"type": "llm", "provider": "openai", "model": "gpt-4o", "prompt": text}
    if kind == "embed":
        return {"type": "embed", "provider": "cohere", "model": "embed-v3", "input": text}
    return {
        "type": "vector_search",
        "database": "pgvector",
        "index": "docs",
        "query": text,
        "top_k": 8,
    }


def chain_workflow(steps: int) -> dict[str, Any]:
    """The worst case for size: every step is top-level, so each has its own handlers."""
    listed = [
        {
            "id": f"step-{index:04d}",
            "depends_on": [f"step-{index - 1:04d}"] if index else [],
            **_fields("llm", [f"out_{index - 1}"] if index else []),
            "output": [f"out_{index}"],
        }
        for index in range(steps)
    ]
    return {"name": "bench-chain-1000", "steps": listed}


def _median_ms(definition: WorkflowDefinition) -> tuple[float, str]:
    timings = []
    text = ""
    for _ in range(RUNS):
        started = time.perf_counter()
        text = to_json(compile_workflow(definition, step_runner_arn=RUNNER))
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings), text


def main() -> int:
    data = random_workflow(STEPS, SEED)
    started = time.perf_counter()
    definition = parse_definition(data)
    parse_ms = (time.perf_counter() - started) * 1000
    compile_ms, text = _median_ms(definition)
    size = len(text.encode())
    chain_ms, chain_text = _median_ms(parse_definition(chain_workflow(STEPS)))
    chain_size = len(chain_text.encode())
    print(f"parse_1000_steps_ms={parse_ms:.1f}")
    print(f"compile_1000_steps_ms={compile_ms:.1f}")
    print(f"definition_bytes={size}")
    print(f"compile_1000_chain_ms={chain_ms:.1f}")
    print(f"chain_definition_bytes={chain_size}")
    fast = max(compile_ms, chain_ms) <= COMPILE_BUDGET_MS
    small = max(size, chain_size) < SIZE_BUDGET_BYTES
    within = fast and small
    print(f"within_budget={str(within).lower()}")
    return 0 if within else 1


if __name__ == "__main__":
    raise SystemExit(main())
