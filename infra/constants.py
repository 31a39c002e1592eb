"""Names and sizes of everything the CDK app deploys, in one place."""

from __future__ import annotations

from pathlib import Path

from layers.bundles import LAMBDA_PYTHON

ROOT = Path(__file__).resolve().parents[1]
FUNCTIONS_DIR = ROOT / "functions"
LAYERS_DIR = ROOT / "build" / "layers"
PLACEHOLDER_LAYER_DIR = Path(__file__).resolve().parent / "placeholder_layer"
PLACEHOLDER_FUNCTION_DIR = Path(__file__).resolve().parent / "placeholder_function"
OPENAPI = ROOT / "openapi.json"
PACKAGE_DIR = ROOT / "shared" / "llm_orchestrator"
OUTDIR = ROOT / "cdk.out"

PREFIX = "llmo"
"""Every name the stacks and the runtime create starts with this (IAM scopes rely on it)."""
DATA_STACK = "LlmoData"
APP_STACK = "LlmoApp"

# --- functions ----------------------------------------------------------------------------
API_GROUPS = ("auth", "workflows", "executions", "state", "monitoring", "audit", "admin")
RUNNERS = ("step_runner", "vector_runner")
"""The functions the state machines invoke: one handler code, two dependency bundles (the
provider SDKs and the vector SDKs do not fit in one; layers/bundles.py)."""
FUNCTIONS = (*API_GROUPS, *RUNNERS, "events", "migrate")
ROUTE_GROUPS: dict[str, str] = {group: group for group in API_GROUPS} | {"triggers": "workflows"}
"""OpenAPI tag → the function that serves the operations carrying it (as the routers each
``functions/<group>/handler.py`` mounts; tests/infra checks the two agree)."""
ROUTE_OVERRIDES: dict[tuple[str, str], str] = {("POST", "/api/v1/events"): "executions"}
"""Operations served by another function than their tag's."""

# Which functions do what beyond reading the database and the app's keys (the stack grants
# these; tests/infra checks them against the names the runtime uses).
MANAGE_EXECUTIONS = ("workflows", "executions", "state", "events")
"""Create/update state machines and start/stop executions (execute, restore, triggers)."""
MANAGE_TRIGGERS = ("workflows",)
"""Create schedules and event rules (the triggers API); they target the events function."""
REMOVE_TRIGGERS = ("events",)
"""Remove the schedule or rule of a trigger that is gone or stopped when it fires."""
PUBLISH_COMPLETIONS = (*MANAGE_EXECUTIONS, *RUNNERS)
"""Whoever may end an execution (a run that could not start, a cancel, a failed step, a
status change) publishes its completion event."""
WRITE_APP_SECRETS = ("admin",)
READ_APP_SECRETS = ("admin", *RUNNERS)
"""The runners resolve provider and vector-database settings from stored secrets."""

PYTHON_VERSION = LAMBDA_PYTHON
"""The Lambda runtime: the version `layers/bundles.py` builds the bundles for."""
MEMORY_MB: dict[str, int] = {"step_runner": 1024, "vector_runner": 1024, "migrate": 512}
DEFAULT_MEMORY_MB = 1024
TIMEOUT_SECONDS: dict[str, int] = {
    "step_runner": 300,
    "vector_runner": 300,
    "events": 60,
    "migrate": 300,
}
API_TIMEOUT_SECONDS = 29
"""API Gateway's integration timeout: an API function running longer answers nobody."""
LOG_RETENTION = "ONE_MONTH"
"""A name of ``aws_logs.RetentionDays``, for every log group of the app."""
POWERTOOLS_NAMESPACE = "LLMOrchestrator"

# --- API Gateway --------------------------------------------------------------------------
API_PREFIX = "/api/v1"
STAGE_NAME = "v1"
THROTTLE_RATE_PER_SECOND = 200
THROTTLE_BURST = 400

# --- database -----------------------------------------------------------------------------
DATABASE_NAME = "llmo"
DATABASE_ADMIN_USER = "llmo_admin"
DATABASE_PORT = 5432
AURORA_MIN_ACU = 0.5
AURORA_MAX_ACU = 8
BACKUP_RETENTION_DAYS = 7

# --- secrets (names in Secrets Manager) ---------------------------------------------------
DATABASE_SECRET_NAME = f"{PREFIX}/database"
JWT_SECRET_NAME = f"{PREFIX}/jwt-signing-key"
SECRETS_KEY_NAME = f"{PREFIX}/secrets-encryption-key"
ADMIN_PASSWORD_NAME = f"{PREFIX}/initial-admin-password"
APP_SECRETS_PREFIX = f"{PREFIX}/app/"
"""Where the `aws` secrets backend keeps the secrets stored through POST /admin/secrets."""

# --- orchestration ------------------------------------------------------------------------
# Names the runtime creates at run time, which the IAM grants are scoped to. The runtime
# owns them (engine/stepfunctions.py, triggers/eventbridge.py, ids.py); this module cannot
# import it (the `infra` extra carries no server stack), so
# tests/infra/test_runtime_names.py derives each name from the runtime and checks it here.
STATE_MACHINE_PREFIX = f"{PREFIX}-"
"""The engine names every state machine ``llmo-<workflow id>-<digest>``."""
EVENT_BUS_NAME = f"{PREFIX}-events"
SCHEDULE_GROUP_NAME = f"{PREFIX}-triggers"
"""Trigger schedules are named by their trigger id (``trg-<uuid>``) in this group."""
EVENT_RULE_PREFIX = f"{PREFIX}-trg-"
"""Event-pattern triggers are the rules ``llmo-<trigger id>`` = ``llmo-trg-<uuid>``."""

# --- alarms -------------------------------------------------------------------------------
ALARM_PERIOD_MINUTES = 5
AURORA_CAPACITY_ALARM_FRACTION = 0.9
