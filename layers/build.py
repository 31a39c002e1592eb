"""Build the Lambda dependency bundles, Docker-free: ``python -m layers.build``.

For each function kind (``layers/bundles.py``) pip installs the requirements that
``pyproject.toml`` gives that kind into ``build/layers/<kind>/python`` for the Lambda
platform (``--platform manylinux2014_aarch64 --only-binary=:all:``), removes what the Lambda
runtime already ships, adds the ``llm_orchestrator`` package, and measures the result. A
bundle larger than 200 MB unzipped fails the build. ``--host`` builds for this machine
instead, so that ``make smoke`` can import every handler from the bundle alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from layers.bundles import (
    BUNDLE_EXTRAS,
    LAMBDA_PLATFORM,
    LAMBDA_PYTHON,
    MAX_BUNDLE_BYTES,
    ROOT,
    RUNTIME_PROVIDED,
    bundle_requirements,
    normalize,
)

PACKAGE = ROOT / "shared" / "llm_orchestrator"


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _remove_distribution(site: Path, dist_info: Path) -> None:
    """Delete every file a distribution's RECORD lists, then its metadata directory."""
    record = dist_info / "RECORD"
    if record.exists():
        for line in record.read_text(encoding="utf-8").splitlines():
            relative = line.split(",", 1)[0]
            if relative:
                (site / relative).unlink(missing_ok=True)
    shutil.rmtree(dist_info, ignore_errors=True)
    for directory in sorted(site.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()


def installed_distributions(site: Path) -> dict[str, str]:
    """Normalized name → version of every distribution installed in ``site``."""
    found = {}
    for dist_info in site.glob("*.dist-info"):
        name, _, version = dist_info.name.removesuffix(".dist-info").rpartition("-")
        found[normalize(name)] = version
    return dict(sorted(found.items()))


def build_bundle(kind: str, out: Path, *, host: bool) -> dict[str, object]:
    target = out / kind
    site = target / "python"
    shutil.rmtree(target, ignore_errors=True)
    site.mkdir(parents=True)
    requirements = bundle_requirements(kind)
    (target / "requirements.in").write_text("\n".join(requirements) + "\n", encoding="utf-8")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    command += ["--target", str(site), "--only-binary=:all:"]
    if not host:
        command += ["--platform", LAMBDA_PLATFORM, "--implementation", "cp"]
        command += ["--python-version", LAMBDA_PYTHON]
    subprocess.run([*command, *requirements], check=True)

    for dist_info in list(site.glob("*.dist-info")):
        name = normalize(dist_info.name.removesuffix(".dist-info").rpartition("-")[0])
        if name in RUNTIME_PROVIDED:
            _remove_distribution(site, dist_info)
    shutil.rmtree(site / "bin", ignore_errors=True)
    shutil.copytree(
        PACKAGE, site / "llm_orchestrator", ignore=shutil.ignore_patterns("__pycache__")
    )
    for cache in list(site.rglob("__pycache__")):
        shutil.rmtree(cache, ignore_errors=True)

    distributions = installed_distributions(site)
    (target / "requirements.txt").write_text(
        "".join(f"{name}=={version}\n" for name, version in distributions.items()),
        encoding="utf-8",
    )
    size = directory_bytes(site)
    return {"kind": kind, "bytes": size, "mb": round(size / 1e6, 1), "distributions": distributions}


def oversized(results: list[dict[str, object]], max_bytes: int) -> list[str]:
    """The kinds whose bundle is larger than ``max_bytes`` unzipped."""
    return [str(r["kind"]) for r in results if int(str(r["bytes"])) > max_bytes]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m layers.build", description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "layers")
    parser.add_argument("--kind", choices=sorted(BUNDLE_EXTRAS), action="append")
    parser.add_argument("--host", action="store_true", help="build for this machine")
    parser.add_argument(
        "--max-bytes", type=int, default=MAX_BUNDLE_BYTES, help="fail past this size"
    )
    args = parser.parse_args(argv)
    kinds = args.kind or sorted(BUNDLE_EXTRAS)
    args.out.mkdir(parents=True, exist_ok=True)
    platform = "host" if args.host else f"{LAMBDA_PLATFORM} / cp{LAMBDA_PYTHON}"
    report: list[dict[str, object]] = []
    for kind in kinds:
        result = build_bundle(kind, args.out, host=args.host)
        report.append(result)
        verdict = "TOO BIG" if oversized([result], args.max_bytes) else "ok"
        print(f"bundle {kind:<12} {result['mb']:>7} MB unzipped ({platform}) {verdict}")
    too_big = oversized(report, args.max_bytes)
    (args.out / "sizes.json").write_text(
        json.dumps({"platform": platform, "bundles": report}, indent=2) + "\n", encoding="utf-8"
    )
    if too_big:
        limit_mb = args.max_bytes / 1e6
        print(f"layers: {', '.join(too_big)} over {limit_mb:.0f} MB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
