VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8080
# Two workers fit this project's 2-core CI machine; override with `make test WORKERS=4`.
WORKERS ?= 2

.PHONY: install run test smoke fuzz layers lint format bench synth openapi clean

# --no-compile: pip would byte-compile every module of every dependency (over 300 MB of
# source, three quarters of it never imported by the tests: most of aws-cdk-lib); Python
# compiles what is imported on first use instead.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/llmo serve --host $(HOST) --port $(PORT)

# Bytecode is cached even where the environment says PYTHONDONTWRITEBYTECODE: without it every
# worker and every Python process the tests start (`llmo serve`, the import checks of each
# Lambda bundle, the crash-recovery servers) compiles all it imports again from source.
test: $(STAMP)
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m pytest -n $(WORKERS) --dist loadgroup -q

# The distribution as users install it: wheel → fresh venv per install line → checks
# (see tests/smoke.py). Needs the package index; takes several minutes. CI runs it after test.
smoke: $(STAMP)
	$(PY) -m tests.smoke

# schemathesis with every check against a fresh `llmo serve` and the OpenAPI document it
# serves (tests/fuzz.py); several minutes, not part of `make test`.
fuzz: $(STAMP)
	$(PY) -m tests.fuzz

# Lambda dependency bundles per function kind, for arm64 (layers/build.py); > 200 MB fails.
layers: $(STAMP)
	$(PY) -m layers.build

# The whole suite under coverage.py with branch coverage. `patch = subprocess` (pyproject.toml)
# measures every Python process the tests start: the xdist workers, `llmo serve`, the
# crash-recovery servers. Per-process data files are combined before the report.
coverage: $(STAMP)
	rm -f .coverage .coverage.*
	$(PY) -m coverage run -m pytest -n $(WORKERS) -q
	$(PY) -m coverage combine -q
	$(PY) -m coverage report --format=total > .coverage-total
	$(PY) -m coverage report
	@echo "total (lines + branches): $$(cat .coverage-total)%"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Installs the `bench` extra first: the LangGraph and DBOS anchors (tests/perf/anchors.py).
bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m tests.perf

# The CDK app's CloudFormation into cdk.out/: offline, no AWS credentials, cdk-nag on.
synth: $(STAMP)
	$(PY) infra/app.py

openapi: $(STAMP)
	$(PY) -m llm_orchestrator.api.openapi > openapi.json.tmp && mv openapi.json.tmp openapi.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.* .coverage-total htmlcov build cdk.out
