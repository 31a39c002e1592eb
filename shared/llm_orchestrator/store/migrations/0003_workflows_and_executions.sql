-- Workflow definitions, their executions, per-step runs, checkpoints and parked task tokens.

CREATE TABLE workflows (
    id              uuid PRIMARY KEY,
    owner_id        text NOT NULL REFERENCES users (id),
    name            text NOT NULL,
    version         text NOT NULL,
    description     text,
    definition      jsonb NOT NULL,
    timeout_seconds integer NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX workflows_owner_idx ON workflows (owner_id, created_at);
CREATE INDEX workflows_name_idx ON workflows (lower(name) text_pattern_ops);

-- An execution pins the definition and compiled state machine it started with: editing
-- the workflow never changes a running execution.
CREATE TABLE executions (
    id               text PRIMARY KEY,
    workflow_id      uuid NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    owner_id         text NOT NULL REFERENCES users (id),
    status           text NOT NULL CHECK (status IN
                       ('pending', 'running', 'paused', 'completed', 'failed', 'cancelled', 'timed_out')),
    inputs           jsonb NOT NULL,
    definition       jsonb NOT NULL,
    state_machine    jsonb NOT NULL,
    timeout_seconds  integer NOT NULL,
    pause_requested  boolean NOT NULL DEFAULT false,
    cancel_requested boolean NOT NULL DEFAULT false,
    error            jsonb,
    run_number       integer NOT NULL DEFAULT 1,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX executions_workflow_idx ON executions (workflow_id, status);
CREATE INDEX executions_status_idx ON executions (status);

CREATE TABLE step_runs (
    execution_id  text NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    step_id       text NOT NULL,
    step_type     text NOT NULL,
    provider      text,
    status        text NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    outputs       jsonb,
    error         jsonb,
    attempts      integer NOT NULL DEFAULT 0,
    input_tokens  integer,
    output_tokens integer,
    latency_ms    double precision,
    started_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz,
    PRIMARY KEY (execution_id, step_id)
);

CREATE TABLE checkpoints (
    id           text PRIMARY KEY,
    execution_id text NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    step_id      text,
    kind         text NOT NULL CHECK (kind IN ('auto', 'manual')),
    snapshot     jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX checkpoints_execution_idx ON checkpoints (execution_id, created_at);

-- Task tokens of steps parked by a pause; resume sends SendTaskSuccess for each.
CREATE TABLE parked_tasks (
    execution_id text NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    step_id      text NOT NULL,
    task_token   text NOT NULL,
    parked_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (execution_id, step_id)
);
