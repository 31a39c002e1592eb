"""``make bench``: run every benchmark in this folder and print its numbers."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def main() -> int:
    folder = Path(__file__).parent
    for module in sorted(m.name for m in pkgutil.iter_modules([str(folder)])):
        if not module.startswith("bench_"):
            continue
        print(f"## {module}", flush=True)
        importlib.import_module(f"tests.perf.{module}").main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
