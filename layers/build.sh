#!/usr/bin/env bash
# Build the shared Lambda layer: dependencies for the Lambda runtime's platform plus the
# llm_orchestrator package, under python/ as Lambda expects. Output: build/layer/.
set -euo pipefail
cd "$(dirname "$0")/.."
PLATFORM="${LAYER_PLATFORM:-manylinux2014_x86_64}"
PYTHON_VERSION="${LAYER_PYTHON_VERSION:-3.12}"
OUT=build/layer/python
rm -rf build/layer && mkdir -p "$OUT"
python3 -m pip install --quiet --target "$OUT" --platform "$PLATFORM" \
  --implementation cp --python-version "$PYTHON_VERSION" --only-binary=:all: \
  -r layers/requirements.txt
cp -r shared/llm_orchestrator "$OUT/"
find "$OUT" -name '__pycache__' -prune -exec rm -rf {} +
echo "layer ready in build/layer ($(du -sh build/layer | cut -f1))"
