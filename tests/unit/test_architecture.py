"""The layering rules of DESIGN.md, checked on the source: no upward import, no package cycle.

Every import counts, including those inside functions and under ``TYPE_CHECKING``: a lazy
import is still a dependency, only a cheaper one.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from llm_orchestrator.executions.status import ExecutionStatus, StepStatus

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "shared" / "llm_orchestrator"
FUNCTIONS = ROOT / "functions"
TOP = "llm_orchestrator"

KERNEL, STORE, DOMAIN, COMPOSITION, API, ENTRY, FUNCTION = range(7)
LAYER_NAMES = ["kernel", "store", "domain", "composition", "api", "entry point", "functions"]

LAYERS: dict[str, int] = {
    # Plain values every layer may use.
    "__init__": KERNEL,
    "errors": KERNEL,
    "ids": KERNEL,
    "clock": KERNEL,
    "extras": KERNEL,
    "executions.status": KERNEL,
    "redaction": KERNEL,
    "jsonvalues": KERNEL,
    "memo": KERNEL,
    # All SQL.
    "store": STORE,
    # Rules and the adapters they call (providers, vector stores, secrets backends).
    "auth": DOMAIN,
    "audit": DOMAIN,
    "workflows": DOMAIN,
    "compiler": DOMAIN,
    "executions": DOMAIN,
    "engine": DOMAIN,
    "steps": DOMAIN,
    "providers": DOMAIN,
    "usage": DOMAIN,
    "vectorstores": DOMAIN,
    "secrets": DOMAIN,
    "ratelimit": DOMAIN,
    "metrics": DOMAIN,
    "triggers": DOMAIN,
    # Settings and the one place that wires objects together.
    "config": COMPOSITION,
    "runtime": COMPOSITION,
    # HTTP.
    "api": API,
    # What a process or a Lambda starts from.
    "server": ENTRY,
    "cli": ENTRY,
    "step_runner_lambda": ENTRY,
    "migrate_lambda": ENTRY,
    "events_lambda": ENTRY,
    "client": ENTRY,
}
"""Top-level module or package (or a more specific module) → its layer."""


@dataclass(frozen=True)
class Import:
    source: str
    """Module that imports, e.g. ``llm_orchestrator.api.deps`` or ``functions.auth.handler``."""
    target: str
    """Our module it imports, e.g. ``llm_orchestrator.runtime``."""
    line: int


def _module_name(path: Path) -> str:
    if path.is_relative_to(PACKAGE):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    else:
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(path: Path) -> Iterator[Import]:
    module = _module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            resolved = _resolve(module, path.name == "__init__.py", node)
            # ``from llm_orchestrator.api import audit_log`` imports a submodule.
            targets = [resolved, *(f"{resolved}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            if target == TOP or target.startswith(TOP + "."):
                yield Import(module, target, node.lineno)


def all_imports() -> list[Import]:
    files = [*PACKAGE.rglob("*.py"), *FUNCTIONS.rglob("*.py")]
    known = {_module_name(f) for f in files if f.is_relative_to(PACKAGE)}
    found = []
    for path in sorted(files):
        for edge in imports_of(path):
            # ``from pkg import name`` where name is not a module is not a module import.
            if edge.target in known:
                found.append(edge)
    return found


def unit_of(module: str) -> str:
    """The top-level module or package of one of ours (``api``, ``runtime``), or
    ``functions`` for a Lambda entry point; a module that ``LAYERS`` names on its own
    (``executions.status``, plain values) is a unit of its own."""
    parts = module.split(".")
    if parts[0] != TOP:
        return "functions"
    inner = module.removeprefix(TOP + ".")
    for name in LAYERS:
        if "." in name and (inner == name or inner.startswith(name + ".")):
            return name
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(module: str) -> int:
    if unit_of(module) == "functions":
        return FUNCTION
    inner = "__init__" if module == TOP else module.removeprefix(TOP + ".")
    candidates = [name for name in LAYERS if inner == name or inner.startswith(name + ".")]
    if not candidates:
        pytest.fail(f"{module} has no layer: add its package to LAYERS in {Path(__file__).name}")
    return LAYERS[max(candidates, key=len)]


def upward_imports(edges: list[Import]) -> list[str]:
    return [
        f"{e.source}:{e.line} imports {e.target}"
        f" ({LAYER_NAMES[layer_of(e.source)]} → {LAYER_NAMES[layer_of(e.target)]})"
        for e in edges
        if layer_of(e.target) > layer_of(e.source)
    ]


def package_cycles(edges: list[Import]) -> list[list[str]]:
    """Every cycle between top-level units, one per strongly connected component."""
    graph: dict[str, set[str]] = defaultdict(set)
    for edge in edges:
        source, target = unit_of(edge.source), unit_of(edge.target)
        if source != target and target != "__init__":
            graph[source].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_no_layer_imports_a_higher_one() -> None:
    assert upward_imports(all_imports()) == []


def test_no_two_packages_import_each_other() -> None:
    assert package_cycles(all_imports()) == []


def test_the_checks_catch_an_upward_import_and_a_cycle() -> None:
    edges = [
        Import("llm_orchestrator.store.db", "llm_orchestrator.api.deps", 1),
        Import("llm_orchestrator.api.deps", "llm_orchestrator.store.db", 2),
        Import("llm_orchestrator.compiler.state_machine", "llm_orchestrator.workflows.models", 3),
        Import("llm_orchestrator.workflows.service", "llm_orchestrator.compiler", 4),
    ]

    assert upward_imports(edges) == [
        "llm_orchestrator.store.db:1 imports llm_orchestrator.api.deps (store → api)"
    ]
    assert package_cycles(edges) == [["api", "store"], ["compiler", "workflows"]]


def test_the_edges_include_lazy_and_relative_imports() -> None:
    edges = {(e.source, e.target) for e in all_imports()}

    # Inside a function body:
    assert ("llm_orchestrator.runtime", "llm_orchestrator.store.db") in edges
    # ``from .base import …`` inside the providers package:
    assert ("llm_orchestrator.providers", "llm_orchestrator.providers.base") in edges
    # A Lambda entry point:
    assert ("functions.auth.handler", "llm_orchestrator.api.lambda_entry") in edges


def test_the_asl_interpreter_knows_nothing_of_the_product() -> None:
    # engine.asl runs any state machine of the subset: no workflows, steps, store, engine.
    outside = [
        f"{e.source}:{e.line} imports {e.target}"
        for e in all_imports()
        if e.source.startswith(f"{TOP}.engine.asl") and not e.target.startswith(f"{TOP}.engine.asl")
    ]

    assert outside == []


def test_executions_depend_on_the_engine_port_not_on_an_engine() -> None:
    # The engines import the lifecycle and the port; the reverse would tie the application
    # service to one engine (and make a package cycle).
    upward = [
        f"{e.source}:{e.line} imports {e.target}"
        for e in all_imports()
        if unit_of(e.source) == "executions" and unit_of(e.target) in ("engine", "steps")
    ]

    assert upward == []


def test_only_the_lifecycle_writes_an_executions_status() -> None:
    # Every transition and its audit event go through executions.lifecycle: nothing else
    # calls the repository's transitions.
    transitions = ("request_pause", "request_resume", "request_cancel", "mark_running", "finish")
    callers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        if module in (f"{TOP}.executions.lifecycle", f"{TOP}.store.executions"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in transitions
                and isinstance(node.value, ast.Attribute)
                and node.value.attr in ("_repo", "execution_store")
            ):
                callers.append(f"{module}:{node.lineno} calls {node.attr}")

    assert callers == []


# -- execution statuses are spelled by their enum alone ---------------------------------------

STATUS_WORDS = frozenset(s.value for s in (*ExecutionStatus, *StepStatus))
_QUOTED_STATUS = re.compile(r"'(" + "|".join(sorted(STATUS_WORDS)) + r")'")
STATUS_LITERAL_ALLOWED = {
    ("engine/asl/timers.py", "cancelled"): "a timer handle's attribute name in __slots__",
    ("steps/runner.py", "failed"): "the key of the fail Task's result, {'failed': True}",
}
"""(path under the package, word) → why that string is not an execution or step status."""


def status_literals(relative: str, source: str) -> list[str]:
    """Strings that spell an execution or step status outside ``executions.status``: a whole
    literal (``"running"``) or a quoted SQL value (``status = 'running'``). Docstrings and
    ``STATUS_LITERAL_ALLOWED`` are exempt."""
    tree = ast.parse(source)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
        # An attribute docstring: a string expression statement right after an assignment.
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            docstrings.add(id(node.value))
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            continue
        if id(node) in docstrings:
            continue
        words = [node.value] if node.value in STATUS_WORDS else []
        words += _QUOTED_STATUS.findall(node.value)
        for word in words:
            if (relative, word) not in STATUS_LITERAL_ALLOWED:
                found.append(f"{relative}:{node.lineno} spells {word!r}")
    return found


def test_no_execution_status_is_spelled_outside_its_enum() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative == "executions/status.py":
            continue
        found += status_literals(relative, path.read_text(encoding="utf-8"))

    assert found == [], "use ExecutionStatus / StepStatus from executions.status"


def test_the_status_check_catches_a_literal_a_sql_value_and_spares_docstrings() -> None:
    source = (
        '"""A module that is running."""\n'
        "def f(x):\n"
        '    """Whether x is completed."""\n'
        '    if x.status == "paused":\n'
        "        return \"UPDATE executions SET status = 'cancelled'\"\n"
        '    return {"failed": True}\n'
    )

    assert status_literals("steps/other.py", source) == [
        "steps/other.py:4 spells 'paused'",
        "steps/other.py:5 spells 'cancelled'",
        "steps/other.py:6 spells 'failed'",
    ]
    assert status_literals("steps/runner.py", source)[-1:] == [
        "steps/runner.py:5 spells 'cancelled'"
    ]
