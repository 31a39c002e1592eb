"""Cold-start import time of every Lambda handler against bare FastAPI + Mangum + Powertools.

Run with ``python -m tests.perf.bench_imports``. Each figure is the median of several fresh
interpreters (one subprocess per import, handlers and the baseline interleaved so machine
load hits them alike), timing only the import itself, not the interpreter's start, as the
CPU time the interpreter spends on it: on a shared machine wall time mostly measures the
wait for a core, while an import is CPU work (a Lambda cold start pays it in full). The
baseline builds what every HTTP handler builds at import: a FastAPI app wrapped by Mangum,
and a Powertools Logger, Metrics and Tracer. Budget: every HTTP handler at most 1.3× the
baseline; exits non-zero when one is over.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ROOT / "functions"
HTTP_GROUPS = ("auth", "workflows", "executions", "state", "monitoring", "audit", "admin")
OTHER_HANDLERS = ("step_runner",)
RUNS = int(os.environ.get("LLMO_BENCH_IMPORT_RUNS", "7"))
BUDGET_RATIO = 1.3

_TIMER = """
import sys, time
started = time.process_time()
{body}
sys.stdout.write(repr(time.process_time() - started))
"""

BASELINE = """
from aws_lambda_powertools import Logger, Metrics, Tracer
from fastapi import FastAPI
from mangum import Mangum
Logger(service="bare"); Metrics(namespace="bare", service="bare"); Tracer(service="bare")
Mangum(FastAPI(), lifespan="off")
"""


def _handler_body(group: str) -> str:
    path = FUNCTIONS / group / "handler.py"
    return (
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('handler', {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
    )


def time_import(body: str) -> float:
    """CPU seconds one fresh interpreter spends running ``body``."""
    completed = subprocess.run(
        [sys.executable, "-c", _TIMER.format(body=body)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return float(completed.stdout.strip())


def measure(runs: int = RUNS) -> dict[str, float]:
    """Median import CPU seconds of the baseline (``"bare"``) and of every handler."""
    subjects = {"bare": BASELINE}
    subjects.update({g: _handler_body(g) for g in (*HTTP_GROUPS, *OTHER_HANDLERS)})
    samples: dict[str, list[float]] = {name: [] for name in subjects}
    for _ in range(runs):
        for name, body in subjects.items():
            samples[name].append(time_import(body))
    return {name: statistics.median(times) for name, times in samples.items()}


def main() -> None:
    medians = measure()
    bare = medians["bare"]
    print(f"bare FastAPI + Mangum + Powertools: {bare * 1000:7.1f} ms CPU (median of {RUNS})")
    over = []
    for name in (*HTTP_GROUPS, *OTHER_HANDLERS):
        ratio = medians[name] / bare
        budget = f"budget {BUDGET_RATIO}x" if name in HTTP_GROUPS else "no budget"
        verdict = "ok" if name not in HTTP_GROUPS or ratio <= BUDGET_RATIO else "OVER"
        print(
            f"handler {name:<12} {medians[name] * 1000:7.1f} ms  {ratio:4.2f}x bare"
            f"  ({budget}) {verdict}"
        )
        if verdict == "OVER":
            over.append(name)
    if over:
        print(f"over budget: {', '.join(over)}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
