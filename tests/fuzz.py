"""`make fuzz`: schemathesis against a real `llmo serve`, driven by the OpenAPI document the
server itself serves, with every check on.

Starts `llmo serve` on the embedded PostgreSQL in a fresh data directory, logs in as the
bootstrap admin, mints an API key with every scope, and runs `schemathesis run --checks
all` (examples, coverage and fuzzing phases) authenticated with that key. It passes when
schemathesis reports no failure: no 5xx, no schema-valid request rejected, no
schema-violating request accepted, every response as documented. `tests/fuzz_hooks.py`
holds the few cross-field rules JSON Schema cannot express (see its docstring).

Before the run it creates one of everything an operation can name by id (a workflow with a
completed execution, its checkpoints, a trigger, audit events; provider calls go to the fake
OpenAI server, started here), so the positive cases that use those ids reach the code
behind the 404 rather than stopping at it.

Not part of `make test`: it takes minutes and wants the machine to itself. Run:
``python -m tests.fuzz [--port N] [--max-examples N] [--seed N] [schemathesis options]``
(e.g. ``--include-path-regex execute``); the schemathesis
report is written under ``build/fuzz/``.
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
from pathlib import Path

import httpx

from llm_orchestrator.auth.permissions import SCOPES
from tests.fakes.openai_server import FakeOpenAI
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "fuzz"
ADMIN_PASSWORD = "fuzz-admin-password-0123456789"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    parser.add_argument("--max-examples", type=int, default=60, help="per operation and phase")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workers", default="1")
    args, extra = parser.parse_known_args(argv)

    WORK.mkdir(parents=True, exist_ok=True)
    port = args.port or free_port()
    base = f"http://127.0.0.1:{port}/api/v1"
    data_dir = Path(tempfile.mkdtemp(prefix="llmo-fuzz-"))
    provider = FakeOpenAI.start(latency=0.2)
    env = {
        **os.environ,
        "LLMO_DATA_DIR": str(data_dir),
        "LLMO_ADMIN_PASSWORD": ADMIN_PASSWORD,
        # Thousands of requests a minute from one address: with limits on, most would be
        # 429 (as designed, and tested in tests/integration/test_rate_limits.py) and
        # reach nothing else.
        "LLMO_RATE_LIMITS_ENABLED": "false",
        "OPENAI_API_KEY": "sk-fuzz",
        "OPENAI_BASE_URL": provider.base_url,
    }
    log = (WORK / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "llm_orchestrator.cli", "serve", "--host", "127.0.0.1"]
        + ["--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_until_live(base, server)
        key = _api_key(base)
        known = _seed(base, key)
        command = [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{base}/openapi.json",
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            str(args.max_examples),
            "--workers",
            args.workers,
            "--header",
            f"X-API-Key: {key}",
            "--report",
            "junit",
            "--report-dir",
            str(WORK),
            "--no-color",
        ]
        if args.seed is not None:
            command += ["--seed", str(args.seed)]
        command += extra  # any other schemathesis option, e.g. --include-path-regex
        fuzz_env = {
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.fuzz_hooks",
            "LLMO_FUZZ_URL": base,
            "LLMO_FUZZ_API_KEY": key,
            "LLMO_FUZZ_KNOWN": json.dumps(known),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        return subprocess.run(command, env=fuzz_env, cwd=ROOT, check=False).returncode
    finally:
        _stop(server)
        provider.stop()
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def _wait_until_live(base: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"llmo serve exited with {server.returncode}; see {WORK}/server.log")
        try:
            if httpx.get(f"{base}/health/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"llmo serve did not become ready in 180 s; see {WORK}/server.log")


def _api_key(base: str) -> str:
    """An API key of the bootstrap admin with every scope (an API key has no session, so
    the fuzzer's own `POST /auth/logout` cannot end it)."""
    login = httpx.post(
        f"{base}/auth/login",
        json={"username": "admin", "password": ADMIN_PASSWORD},
        timeout=30,
    )
    login.raise_for_status()
    token = login.json()["access_token"]
    created = httpx.post(
        f"{base}/auth/keys",
        headers={"Authorization": f"Bearer {token}"},
        json={"name": "fuzz", "scopes": list(SCOPES)},
        timeout=30,
    )
    created.raise_for_status()
    key: str = created.json()["key"]
    return key


def _seed(base: str, key: str) -> dict[str, str]:
    """Ids of real resources, by the parameter name operations give them."""
    with httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=60) as http:

        def call(method: str, path: str, **kwargs: object) -> dict[str, object]:
            response = http.request(method, path, **kwargs)  # type: ignore[arg-type]
            response.raise_for_status()
            answer: dict[str, object] = response.json()
            return answer

        steps = [
            {"id": "summary", "type": "llm", "provider": "openai", "model": "gpt-4o-mini",
             "prompt": "Summarise: {{text}}", "output": ["summary"]},
            {"id": "verdict", "type": "llm", "provider": "openai", "model": "gpt-4o-mini",
             "prompt": "Sentiment of: {{summary}}", "depends_on": ["summary"],
             "output": ["sentiment"]},
        ]  # fmt: skip
        workflow = str(call("POST", "/workflows", json={"name": "fuzz-seed", "steps": steps})["id"])
        run = call(
            "POST",
            f"/workflows/{workflow}/execute",
            json={"inputs": {"text": "hi"}, "async": False},
        )
        execution = str(run["execution_id"])
        listed = call("GET", f"/state/{workflow}/checkpoints", params={"executionId": execution})
        checkpoints = listed["checkpoints"]
        assert isinstance(checkpoints, list) and checkpoints, listed
        trigger = call(
            "POST",
            f"/workflows/{workflow}/triggers",
            json={"type": "schedule", "schedule": "rate(1 day)", "inputs": {"text": "hi"}},
        )
        events = call("GET", "/audit/events", params={"limit": 1})["events"]
        assert isinstance(events, list) and events, events
        return {
            "workflow_id": workflow,
            "executionId": execution,
            "checkpointId": str(checkpoints[0]["id"]),
            "trigger_id": str(trigger["id"]),
            "event_id": str(events[0]["id"]),
        }


def _stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


if __name__ == "__main__":
    raise SystemExit(main())
