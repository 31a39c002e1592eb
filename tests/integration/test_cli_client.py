"""The ``llmo`` client commands against the real API on a real port, as a user runs them."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pty
import re
import select
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from llm_orchestrator.cli import main
from llm_orchestrator.client import Client
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.conftest import ADMIN_PASSWORD, ADMIN_USERNAME
from tests.integration.execution_support import llm_step
from tests.integration.live_server import LiveServer

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW_YAML = """\
name: two-step
version: "1.0"
description: draft, then polish
steps:
  - id: draft
    type: llm
    provider: openai
    model: gpt-4
    prompt: "write about {{topic}}"
    output: [draft]
  - id: polish
    type: llm
    provider: openai
    model: gpt-4
    prompt: "polish {{draft}}"
    depends_on: [draft]
    output: [final]
"""


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


Llmo = Callable[..., Ran]


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return tmp_path / "config"


@pytest.fixture
def llmo(
    live: LiveServer,
    config_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Llmo:
    monkeypatch.setenv("LLMO_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("LLMO_URL", live.url)
    monkeypatch.delenv("LLMO_API_KEY", raising=False)

    def run(*argv: str, stdin: str = "") -> Ran:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        try:
            code = main(list(argv))
        except SystemExit as exit_:  # argparse's usage errors
            code = int(exit_.code or 0)
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return run


@pytest.fixture
def logged_in(llmo: Llmo) -> Llmo:
    ran = llmo("login", "--username", ADMIN_USERNAME, stdin=ADMIN_PASSWORD + "\n")
    assert ran.code == 0, ran.err
    return llmo


@pytest.fixture
def workflow_file(tmp_path: Path) -> Path:
    path = tmp_path / "two-step.yaml"
    path.write_text(WORKFLOW_YAML, encoding="utf-8")
    return path


def test_login_stores_tokens_privately_and_logout_forgets_them(
    llmo: Llmo, config_dir: Path, live: LiveServer
) -> None:
    ran = llmo("login", "--username", ADMIN_USERNAME, stdin=ADMIN_PASSWORD + "\n")
    session = config_dir / "session.json"

    assert ran.code == 0, ran.err
    assert f"Logged in to {live.url} as admin" in ran.out
    assert stat.S_IMODE(session.stat().st_mode) == 0o600
    assert ADMIN_PASSWORD not in session.read_text()
    assert llmo("workflows", "list", "--json").json() == []
    refresh_token = json.loads(session.read_text())["refresh_token"]
    out = llmo("logout")
    assert out.code == 0 and "Logged out" in out.out
    assert not session.exists()
    # The server ended the session too: its refresh token is refused.
    refused = httpx.post(f"{live.url}/auth/refresh", json={"refresh_token": refresh_token})
    assert refused.status_code == 401
    after = llmo("workflows", "list")
    assert after.code == 1
    assert "Not logged in" in after.err and "llmo login" in after.err


def test_a_wrong_password_is_one_line_with_the_request_id(llmo: Llmo) -> None:
    ran = llmo("login", "--username", ADMIN_USERNAME, stdin="wrong\n")

    assert ran.code == 1
    lines = ran.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("llmo: error: ")
    assert "401 unauthorized" in lines[0] and "request req-" in lines[0]
    assert "Traceback" not in ran.err


def test_apply_then_run_two_steps_shows_progress_and_exits_0(
    logged_in: Llmo, workflow_file: Path
) -> None:
    created = logged_in("workflows", "apply", "-f", str(workflow_file))
    updated = logged_in("workflows", "apply", "-f", str(workflow_file), "--json")
    run = logged_in("run", "two-step@1.0", "-i", "topic=owls")

    assert created.code == 0, created.err
    workflow_id = created.out.split()[0]
    assert "created two-step@1.0" in created.out
    assert updated.json()["id"] == workflow_id and updated.json()["created"] is False
    assert run.code == 0, run.err
    assert "Running two-step@1.0 as exec-" in run.out
    assert "draft (llm): completed" in run.out
    assert "polish (llm): completed" in run.out
    assert " ms " in run.out and " in / " in run.out
    assert run.out.index("draft (llm): completed") < run.out.index("polish (llm): completed")
    assert "Outputs:" in run.out and "echo: polish echo: write about owls" in run.out
    listed = logged_in("workflows", "list", "--json").json()
    assert [w["id"] for w in listed] == [workflow_id]
    assert logged_in("workflows", "get", "two-step", "--json").json()["inputs"] == ["topic"]


def test_run_json_and_execution_commands_by_id(logged_in: Llmo, workflow_file: Path) -> None:
    logged_in("workflows", "apply", "-f", str(workflow_file))

    run = logged_in("run", "two-step", "--json", "-i", 'topic:="json owls"')
    execution = run.json()
    status = logged_in("executions", "status", execution["id"], "--json")
    checkpoints = logged_in("checkpoints", "list", execution["id"], "--json")
    first = checkpoints.json()[0]["id"]
    restored = logged_in("restore", first, "--json")

    assert run.code == 0
    assert execution["status"] == "completed"
    assert execution["context"]["inputs"] == {"topic": "json owls"}
    assert status.code == 0 and status.json()["id"] == execution["id"]
    assert [c["step_id"] for c in checkpoints.json()] == ["draft", "polish"]
    assert restored.code == 0 and restored.json()["id"] == execution["id"]
    human = logged_in("executions", "status", execution["id"])
    assert "completed" in human.out and "draft" in human.out
    # The status carries no step types: no column of dashes for them.
    assert "type" not in human.out


def test_apply_without_a_version_updates_the_default_version(
    logged_in: Llmo, tmp_path: Path
) -> None:
    path = tmp_path / "unversioned.yaml"
    path.write_text(WORKFLOW_YAML.replace('version: "1.0"\n', ""), encoding="utf-8")
    assert "version" not in path.read_text(encoding="utf-8")

    created = logged_in("workflows", "apply", "-f", str(path), "--json")
    again = logged_in("workflows", "apply", "-f", str(path), "--json")

    assert created.code == 0 and created.json()["created"] is True
    assert again.code == 0 and again.json()["created"] is False
    assert again.json()["id"] == created.json()["id"]
    assert len(logged_in("workflows", "list", "--json").json()) == 1


def test_an_unquoted_yaml_version_is_the_text_written(logged_in: Llmo, tmp_path: Path) -> None:
    path = tmp_path / "numbered.yaml"
    path.write_text(WORKFLOW_YAML.replace('version: "1.0"', "version: 1.10"), encoding="utf-8")
    assert "version: 1.10\n" in path.read_text(encoding="utf-8")

    created = logged_in("workflows", "apply", "-f", str(path), "--json")

    assert created.code == 0, created.err
    assert created.json()["version"] == "1.10"
    found = logged_in("workflows", "list", "--version", "1.10", "--json").json()
    assert [row["id"] for row in found] == [created.json()["id"]]


def test_a_failing_workflow_exits_1(
    logged_in: Llmo, tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.models = frozenset({"gpt-4"})
    path = tmp_path / "bad.json"
    step = llm_step("only", "hi {{name}}", "reply", model="no-such-model")
    path.write_text(json.dumps({"name": "bad", "version": "1", "steps": [step]}))
    logged_in("workflows", "apply", "-f", str(path))

    run = logged_in("run", "bad", "-i", "name=bob")

    assert run.code == 1
    assert "only (llm): failed" in run.out
    assert "failed in step only: ProviderBadRequest" in run.out


def test_detach_then_pause_resume_cancel(
    logged_in: Llmo, workflow_file: Path, fake_openai: FakeOpenAI
) -> None:
    # Long enough a first step for the pause to land before the execution could end, and
    # a second step that outlives the test, so cancel finds it running.
    fake_openai.latency_of = lambda body: (
        30.0 if "polish" in body["messages"][-1]["content"] else 1.5
    )
    logged_in("workflows", "apply", "-f", str(workflow_file))

    started = logged_in("run", "two-step", "-i", "topic=x", "--detach", "--json").json()
    execution_id = started["execution_id"]
    paused = logged_in("executions", "pause", execution_id, "--json")
    resumed = logged_in("executions", "resume", execution_id, "--json")
    cancelled = logged_in("executions", "cancel", execution_id)
    status = logged_in("executions", "status", execution_id)

    assert started["status"] == "pending"
    assert paused.json()["status"] == "paused"
    assert resumed.json()["status"] == "running"
    assert cancelled.code == 0 and "cancelled" in cancelled.out
    assert status.code == 1  # ended, but not completed


def test_idempotency_key_starts_one_execution(logged_in: Llmo, workflow_file: Path) -> None:
    logged_in("workflows", "apply", "-f", str(workflow_file))
    key = str(uuid.uuid4())

    first = logged_in("run", "two-step", "-i", "topic=x", "--detach", "--idempotency-key", key)
    again = logged_in("run", "two-step", "-i", "topic=x", "--detach", "--idempotency-key", key)
    other = logged_in("run", "two-step", "-i", "topic=y", "--detach", "--idempotency-key", key)

    assert first.code == again.code == 0
    assert first.out.strip() == again.out.strip()
    assert other.code == 1 and "409 conflict" in other.err


def test_keys_audit_and_secrets(
    logged_in: Llmo, live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = logged_in(
        "keys", "create", "--name", "ci", "--scope", "workflow:read", "--json"
    ).json()
    listed = logged_in("keys", "list", "--json").json()
    secret = logged_in("secrets", "set", "OPENAI_API_KEY", "--ttl", "600", stdin="sk-cli-secret\n")
    events = logged_in("audit", "events", "--event-type", "secret", "--json").json()
    verify = logged_in("audit", "verify")
    monkeypatch.setenv("LLMO_API_KEY", created["key"])
    by_key = logged_in("workflows", "list", "--json")
    monkeypatch.delenv("LLMO_API_KEY")
    revoked = logged_in("keys", "revoke", created["id"])

    assert [k["id"] for k in listed] == [created["id"]]
    assert secret.code == 0 and "Stored secret OPENAI_API_KEY" in secret.out
    assert "sk-cli-secret" not in secret.out + secret.err
    assert [e["action"] for e in events] and all(e["event_type"] == "secret" for e in events)
    assert "sk-cli-secret" not in json.dumps(events)
    assert verify.code == 0 and "Audit chain intact" in verify.out
    assert by_key.code == 0 and by_key.json() == []
    assert revoked.code == 0
    assert [k["id"] for k in logged_in("keys", "list", "--json").json()] == []


def test_errors_and_usage(logged_in: Llmo, tmp_path: Path) -> None:
    missing = logged_in("workflows", "get", str(uuid.uuid4()))
    missing_json = logged_in("workflows", "get", "no-such-name", "--json")
    empty = tmp_path / "empty.yaml"
    empty.write_text("name: e\nversion: '1'\nsteps: []\n")
    invalid = logged_in("workflows", "apply", "-f", str(empty))
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")

    assert missing.code == 1
    assert len(missing.err.strip().splitlines()) == 1 and "404 not_found" in missing.err
    assert missing_json.code == 1 and missing_json.json()["code"] == "not_found"
    assert invalid.code == 1 and "400 validation_error" in invalid.err and "steps:" in invalid.err
    assert logged_in("workflows", "apply", "-f", str(broken)).code == 2
    assert logged_in("workflows", "apply", "-f", str(tmp_path / "none.yaml")).code == 2
    assert logged_in("run", "two-step", "-i", "no-equals-sign").code == 2
    assert logged_in("run").code == 2
    # A script that asked for JSON gets argparse's own refusals as JSON on stdout too.
    bogus = logged_in("run", "two-step", "--json", "--bogus")
    assert bogus.code == 2 and bogus.json()["code"] == "usage_error"
    assert "--bogus" in bogus.json()["message"] and bogus.err == ""
    unknown = logged_in("executions", "status", "exec-never-seen")
    assert unknown.code == 2 and "--workflow" in unknown.err


def test_client_commands_load_no_server_code(live: LiveServer, tmp_path: Path) -> None:
    with Client(live.url, username=ADMIN_USERNAME, password=ADMIN_PASSWORD) as admin:
        key = admin.keys.create("probe", ["workflow:read"]).key
    probe = (
        "import sys\n"
        "from llm_orchestrator.cli import main\n"
        "code = main(['workflows', 'list', '--json'])\n"
        "server = ('fastapi', 'starlette', 'uvicorn', 'psycopg', 'psycopg_pool', 'openai',\n"
        "          'boto3', 'llm_orchestrator.api', 'llm_orchestrator.engine',\n"
        "          'llm_orchestrator.store', 'llm_orchestrator.runtime')\n"
        "print(sorted(m for m in server if m in sys.modules), file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LLMO_")},
        "LLMO_URL": live.url,
        "LLMO_API_KEY": key,
        "LLMO_CONFIG_DIR": str(tmp_path),
    }

    ran = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )

    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == []
    assert ran.stderr.strip().splitlines()[-1] == "[]"


_AS_AT_A_TERMINAL = (
    "import runpy, signal;"
    "signal.signal(signal.SIGINT, signal.default_int_handler);"
    "runpy.run_module('llm_orchestrator.cli', run_name='__main__')"
)
"""``python -m llm_orchestrator.cli`` with Ctrl-C delivered as at a person's terminal. A test
run started in the background (``make test &``, ``nohup``) inherits SIGINT ignored, because
POSIX shells ignore it in asynchronous commands, and Python keeps an inherited SIG_IGN."""


def _spawn_on_a_terminal(
    argv: list[str], env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], int]:
    """``llmo`` with a pseudo-terminal as stdin, stdout and stderr, as a person runs it."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-c", _AS_AT_A_TERMINAL, *argv],
        cwd=ROOT,
        env=env,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    return process, master


def _read_until(master: int, needle: bytes, seen: bytearray, *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while needle not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"never saw {needle!r} in {bytes(seen)!r}"
        ready, _, _ = select.select([master], [], [], remaining)
        if ready:
            try:
                seen.extend(os.read(master, 4096))
            except OSError:  # the child closed the terminal
                raise AssertionError(f"never saw {needle!r} in {bytes(seen)!r}") from None


@pytest.mark.parametrize("answer", ["y", "n"])
def test_ctrl_c_asks_whether_to_cancel(
    live: LiveServer, tmp_path: Path, fake_openai: FakeOpenAI, answer: str
) -> None:
    fake_openai.latency = 30.0  # the execution outlives the test unless cancelled
    with Client(live.url, username=ADMIN_USERNAME, password=ADMIN_PASSWORD) as admin:
        workflow = admin.workflows.create(
            name="slow", version="1.0", steps=[llm_step("only", "hi {{name}}", "reply")]
        )
        key = admin.keys.create(
            "tty", ["workflow:read", "workflow:execute", "execution:read", "execution:cancel"]
        ).key
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("LLMO_")},
            "LLMO_URL": live.url,
            "LLMO_API_KEY": key,
            "LLMO_CONFIG_DIR": str(tmp_path),
            "COLUMNS": "200",
        }
        process, master = _spawn_on_a_terminal(["run", "slow", "-i", "name=bob"], env)
        seen = bytearray()
        try:
            _read_until(master, b"exec-", seen)
            execution_id = re.search(rb"exec-[0-9a-f-]{36}", bytes(seen)).group().decode()  # type: ignore[union-attr]
            os.killpg(process.pid, signal.SIGINT)
            _read_until(master, b"Cancel execution", seen)
            os.write(master, f"{answer}\n".encode())
            code = process.wait(timeout=30)
            with contextlib.suppress(OSError):
                seen.extend(os.read(master, 65536))
        finally:
            if process.poll() is None:
                process.kill()
            os.close(master)
        status = admin.executions.get(workflow.id, execution_id).status

    if answer == "y":
        assert code == 1
        assert b"Cancelled" in seen
        assert status == "cancelled"
    else:
        assert code == 130
        assert b"keeps running" in seen
        assert status in ("pending", "running")
