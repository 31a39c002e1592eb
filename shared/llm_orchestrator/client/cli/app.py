"""The client commands: each turns its arguments into SDK calls and prints the answer,
as tables for people or as JSON (``--json``) for scripts.

Exit codes: 0 success, 1 the server refused or the execution did not complete, 2 usage.
Errors print one line with the server's message and request id, never a traceback.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from llm_orchestrator.client import Client, LLMOrchestratorError, NotFound, Tokens
from llm_orchestrator.client._core import API_KEY_ENV, resolve_base_url
from llm_orchestrator.client.cli import store
from llm_orchestrator.client.cli.output import Output

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
UUID = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")


class UsageError(Exception):
    """Exit code 2: the command line itself is wrong."""


def dispatch(args: argparse.Namespace) -> int:
    # httpx logs every request at INFO; a command line shows only what it decides to.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    out = Output(as_json=args.json)
    handler: Callable[[argparse.Namespace, Output], int] = HANDLERS[args.handler]
    try:
        return handler(args, out)
    except UsageError as exc:
        out.usage_error(str(exc))
        return EXIT_USAGE
    except LLMOrchestratorError as exc:
        out.api_error(exc)
        return EXIT_FAILED
    except KeyboardInterrupt:
        out.note("interrupted")
        return 130


# -- connection and credentials ----------------------------------------------------------


def _base_url(args: argparse.Namespace, session: dict[str, Any]) -> str | None:
    import os

    return args.url or os.environ.get("LLMO_URL") or session.get("url")


def connect(args: argparse.Namespace) -> Client:
    """A client with ``LLMO_API_KEY``, or the session ``llmo login`` stored."""
    import os

    session = store.load_session()
    url = resolve_base_url(_base_url(args, session))
    api_key = os.environ.get(API_KEY_ENV)
    if api_key:
        return Client(url, api_key=api_key)
    same_server = resolve_base_url(session.get("url")) == url
    if not session.get("refresh_token") or not same_server:
        raise LLMOrchestratorError(
            f"Not logged in to {url}: run `llmo login` or set {API_KEY_ENV}",
            code="unauthorized",
        )

    def keep(tokens: Tokens) -> None:
        store.save_session(_session(url, session.get("username"), tokens))

    return Client(
        url,
        token=session.get("access_token"),
        refresh_token=session["refresh_token"],
        token_expires_at=session.get("expires_at"),
        on_tokens=keep,
    )


def _session(url: str, username: str | None, tokens: Tokens) -> dict[str, Any]:
    return {
        "url": url,
        "username": username,
        "user_id": tokens.user_id,
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "expires_at": time.time() + tokens.expires_in,
    }


def _read_secret(prompt: str) -> str:
    """From a prompt that does not echo, or from stdin when it is not a terminal."""
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    return sys.stdin.readline().rstrip("\r\n")


def login(args: argparse.Namespace, out: Output) -> int:
    session = store.load_session()
    url = resolve_base_url(_base_url(args, session))
    username = args.username
    if not username:
        if not sys.stdin.isatty():
            raise UsageError("--username is required when stdin is not a terminal")
        username = input("Username: ").strip()
    password = _read_secret("Password: ")
    if not username or not password:
        raise UsageError("a username and a password are required")
    with Client(url, username=username, password=password) as client:
        tokens = client.login()
    store.save_session(_session(url, username, tokens))
    out.result(
        {"url": url, "username": username, "user_id": tokens.user_id, "roles": tokens.roles},
        f"Logged in to {url} as {username}",
    )
    return EXIT_OK


def logout(args: argparse.Namespace, out: Output) -> int:
    """End the stored session on its server, then forget it. The local tokens go even when
    the server cannot be reached (the session then lasts until its refresh token expires,
    which the message says)."""
    session = store.load_session()
    ended, problem = False, None
    if session.get("refresh_token") or session.get("access_token"):
        client = Client(
            resolve_base_url(session.get("url")),
            token=session.get("access_token"),
            refresh_token=session.get("refresh_token"),
            token_expires_at=session.get("expires_at"),
            max_retries=1,
        )
        try:
            ended = client.logout()
        except LLMOrchestratorError as exc:
            problem = str(exc)
        finally:
            client.close()
    removed = store.delete_session()
    if not removed:
        message = "Not logged in"
    elif problem:
        message = (
            f"Logged out here; the server did not end the session ({problem}): "
            "it lasts until its refresh token expires"
        )
    else:
        message = "Logged out"
    out.result({"logged_out": removed, "session_ended": ended}, message)
    return EXIT_OK


# -- workflows -------------------------------------------------------------------------------


def load_document(path: str) -> Any:
    """A JSON or YAML file (YAML is a superset of JSON; the suffix only picks the message)."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if path.endswith(".json"):
            return json.loads(text)
        return _yaml_document(text)
    except (ValueError, yaml.YAMLError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"{path} is not valid JSON or YAML: {first_line}") from None


def _yaml_document(text: str) -> Any:
    """The YAML document, with an unquoted top-level ``version`` read as the text written
    (``version: 1.10`` is ``"1.10"``, not the number 1.1): a workflow's version is a string,
    and a number read from it cannot give back the text, trailing zeros and all."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if (
                    isinstance(key, yaml.ScalarNode)
                    and key.value == "version"
                    and isinstance(value, yaml.ScalarNode)
                    and value.style is None
                    and value.tag in (_YAML_INT, _YAML_FLOAT)
                ):
                    value.tag = _YAML_STR
        return None if node is None else loader.construct_document(node)
    finally:
        loader.dispose()


_YAML_INT, _YAML_FLOAT, _YAML_STR = (
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:str",
)


def resolve_workflow(client: Client, ref: str) -> str:
    """A workflow id from an id or ``name[@version]``."""
    if UUID.match(ref):
        return ref
    name, _, version = ref.partition("@")
    found = client.workflows.find(name, version or None)
    if found is None:
        suffix = f" at version {version}" if version else ""
        raise NotFound(f"No workflow named '{name}'{suffix}", status=404, code="not_found")
    return found.id


def workflows_apply(args: argparse.Namespace, out: Output) -> int:
    definition = load_document(args.file)
    if not isinstance(definition, dict):
        raise UsageError(f"{args.file} must hold one workflow object")
    with connect(args) as client:
        workflow, created = client.workflows.apply(definition)
    verb = "created" if created else "updated"
    out.result(
        {**workflow.model_dump(mode="json"), "created": created},
        f"{workflow.id}  ({verb} {workflow.name}@{workflow.version})",
    )
    return EXIT_OK


def workflows_list(args: argparse.Namespace, out: Output) -> int:
    with connect(args) as client:
        rows = list(client.workflows.list(name=args.name, version=args.version))
    out.table(
        [r.model_dump(mode="json") for r in rows],
        ["id", "name", "version", "description", "created_at"],
        title="Workflows",
    )
    return EXIT_OK


def workflows_get(args: argparse.Namespace, out: Output) -> int:
    with connect(args) as client:
        workflow = client.workflows.get(resolve_workflow(client, args.workflow))
    out.document(workflow.model_dump(mode="json"))
    return EXIT_OK


def workflows_delete(args: argparse.Namespace, out: Output) -> int:
    with connect(args) as client:
        workflow_id = resolve_workflow(client, args.workflow)
        client.workflows.delete(workflow_id)
    out.result({"deleted": workflow_id}, f"Deleted workflow {workflow_id}")
    return EXIT_OK


# -- run and executions -----------------------------------------------------------------------


def parse_inputs(pairs: Iterable[str], inputs_file: str | None) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    if inputs_file:
        loaded = load_document(inputs_file)
        if not isinstance(loaded, dict):
            raise UsageError(f"{inputs_file} must hold an object of inputs")
        inputs.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"-i {pair}: expected KEY=VALUE or KEY:=JSON")
        if key.endswith(":"):
            key = key[:-1]
            try:
                inputs[key] = json.loads(value)
            except ValueError:
                raise UsageError(f"-i {pair}: the value after := is not JSON") from None
        else:
            inputs[key] = value
        if not key:
            raise UsageError(f"-i {pair}: the key is empty")
    return inputs


def run(args: argparse.Namespace, out: Output) -> int:
    from llm_orchestrator.client.cli.progress import follow

    inputs = parse_inputs(args.input, args.inputs_file)
    with connect(args) as client:
        workflow = client.workflows.get(resolve_workflow(client, args.workflow))
        accepted = client.workflows.execute(
            workflow.id,
            inputs,
            timeout_override=args.timeout_override,
            idempotency_key=args.idempotency_key,
        )
        store.remember("executions", [accepted.execution_id], accepted.workflow_id)
        if args.detach:
            out.result(accepted.model_dump(mode="json"), accepted.execution_id)
            return EXIT_OK
        return follow(client, workflow, accepted, out, timeout=args.timeout)


def _execution_target(client: Client, args: argparse.Namespace) -> tuple[str, str]:
    if args.workflow:
        return resolve_workflow(client, args.workflow), args.execution
    workflow_id = store.workflow_of("executions", args.execution)
    if workflow_id is None:
        raise UsageError(
            f"which workflow is execution {args.execution} of? pass --workflow WORKFLOW"
        )
    return workflow_id, args.execution


def _execution_command(action: str) -> Callable[[argparse.Namespace, Output], int]:
    def command(args: argparse.Namespace, out: Output) -> int:
        from llm_orchestrator.client.cli.progress import exit_code, render_execution

        with connect(args) as client:
            workflow_id, execution_id = _execution_target(client, args)
            if action == "status":
                execution = client.executions.get(workflow_id, execution_id)
            else:
                execution = getattr(client.executions, action)(workflow_id, execution_id)
        store.remember("executions", [execution.id], workflow_id)
        if out.as_json:
            out.json(execution.model_dump(mode="json"))
        else:
            render_execution(out, execution)
        return exit_code(execution) if action == "status" and execution.is_terminal else EXIT_OK

    return command


def checkpoints_list(args: argparse.Namespace, out: Output) -> int:
    with connect(args) as client:
        workflow_id, execution_id = _execution_target(client, args)
        rows = list(client.checkpoints.list(workflow_id, execution_id))
    store.remember("checkpoints", [c.id for c in rows], workflow_id)
    out.table(
        [r.model_dump(mode="json") for r in rows],
        ["id", "step_id", "timestamp"],
        title=f"Checkpoints of {execution_id}",
    )
    return EXIT_OK


def restore(args: argparse.Namespace, out: Output) -> int:
    from llm_orchestrator.client.cli.progress import render_execution

    with connect(args) as client:
        if args.workflow:
            workflow_id = resolve_workflow(client, args.workflow)
        else:
            found = store.workflow_of("checkpoints", args.checkpoint)
            if found is None:
                raise UsageError(
                    f"which workflow is checkpoint {args.checkpoint} of? pass --workflow WORKFLOW"
                )
            workflow_id = found
        execution = client.state.restore(workflow_id, args.checkpoint)
    store.remember("executions", [execution.id], workflow_id)
    if out.as_json:
        out.json(execution.model_dump(mode="json"))
    else:
        render_execution(out, execution)
    return EXIT_OK


# -- keys, audit, secrets ---------------------------------------------------------------------


def keys_create(args: argparse.Namespace, out: Output) -> int:
    with connect(args) as client:
        key = client.keys.create(
            args.name, args.scopes, expires_in_days=args.expires_in_days, user_id=args.user_id
        )
    out.result(
        key.model_dump(mode="json"),
        f"{key.key}\nAPI key {key.id} ({', '.join(key.scopes)}): shown once, store it now.",
    )
    return EXIT_OK


def keys_list(args: argparse.Namespace, out: Output) -> int:
    with connect(args) as client:
        rows = list(client.keys.list())
    out.table(
        [r.model_dump(mode="json") for r in rows],
        ["id", "name", "scopes", "created_at", "expires_at", "last_used_at"],
        title="API keys",
    )
    return EXIT_OK


def keys_revoke(args: argparse.Namespace, out: Output) -> int:
    with connect(args) as client:
        client.keys.revoke(args.key_id)
    out.result({"revoked": args.key_id}, f"Revoked API key {args.key_id}")
    return EXIT_OK


def audit_events(args: argparse.Namespace, out: Output) -> int:
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    with connect(args) as client:
        events = client.audit.events(
            user_id=args.user_id,
            event_type=args.event_type,
            resource_type=args.resource_type,
            resource_id=args.resource_id,
            start_time=args.start_time,
            end_time=args.end_time,
            result=args.result,
            page_size=min(100, args.limit),
        )
        rows = [e.model_dump(mode="json") for _, e in zip(range(args.limit), events, strict=False)]
    out.table(
        rows,
        ["timestamp", "event_type", "action", "user_id", "resource_type", "resource_id", "result"],
        title="Audit events",
    )
    return EXIT_OK


def audit_verify(args: argparse.Namespace, out: Output) -> int:
    with connect(args) as client:
        verification = client.audit.verify()
    if verification.valid:
        text = f"Audit chain intact: {verification.checked} events checked"
    else:
        text = (
            f"Audit chain BROKEN at event {verification.first_invalid_event_id}"
            f" ({verification.checked} events checked)"
        )
    out.result(verification.model_dump(mode="json"), text)
    return EXIT_OK if verification.valid else EXIT_FAILED


def secrets_set(args: argparse.Namespace, out: Output) -> int:
    value = _read_secret(f"Value of {args.key}: ")
    if not value:
        raise UsageError("the secret's value is empty")
    with connect(args) as client:
        stored = client.admin.set_secret(args.key, value, ttl_seconds=args.ttl_seconds)
    out.result(stored.model_dump(mode="json"), f"Stored secret {stored.key}")
    return EXIT_OK


HANDLERS: dict[str, Callable[[argparse.Namespace, Output], int]] = {
    "login": login,
    "logout": logout,
    "workflows_apply": workflows_apply,
    "workflows_list": workflows_list,
    "workflows_get": workflows_get,
    "workflows_delete": workflows_delete,
    "run": run,
    "executions_status": _execution_command("status"),
    "executions_pause": _execution_command("pause"),
    "executions_resume": _execution_command("resume"),
    "executions_cancel": _execution_command("cancel"),
    "checkpoints_list": checkpoints_list,
    "restore": restore,
    "keys_create": keys_create,
    "keys_list": keys_list,
    "keys_revoke": keys_revoke,
    "audit_events": audit_events,
    "audit_verify": audit_verify,
    "secrets_set": secrets_set,
}
