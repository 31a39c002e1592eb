-- Triggers: schedules and event patterns that start executions of a workflow as their
-- creator. A deleted workflow takes its triggers with it; a deleted creator leaves the
-- trigger in place, stopped, so its listing can say why it no longer runs.

CREATE TABLE triggers (
    id                text PRIMARY KEY,
    workflow_id       uuid NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    type              text NOT NULL CHECK (type IN ('schedule', 'event')),
    schedule          text,
    event_pattern     jsonb,
    inputs            jsonb NOT NULL DEFAULT '{}'::jsonb,
    enabled           boolean NOT NULL DEFAULT true,
    status            text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'stopped')),
    status_reason     text,
    created_by        text REFERENCES users (id) ON DELETE SET NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- The local scheduler's next firing; claimed with a conditional update, so two
    -- processes never fire the same tick.
    next_fire_at      timestamptz,
    last_fired_at     timestamptz,
    last_execution_id text,
    last_error        text,
    -- The delivery last acted on (a Scheduler execution id, an event id): a redelivery
    -- of the same firing starts nothing.
    last_fire_key     text,
    CHECK ((type = 'schedule') = (schedule IS NOT NULL)),
    CHECK ((type = 'event') = (event_pattern IS NOT NULL))
);
CREATE INDEX triggers_workflow_idx ON triggers (workflow_id, created_at);
CREATE INDEX triggers_due_idx ON triggers (next_fire_at)
    WHERE type = 'schedule' AND enabled AND status = 'active';
CREATE INDEX triggers_event_idx ON triggers (created_at)
    WHERE type = 'event' AND enabled AND status = 'active';
