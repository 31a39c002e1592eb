-- Rate-limit windows, the tamper-evident audit trail, and the local secrets store.

-- One row per subject (user, API key or client IP) per window (minute, hour, day) per
-- window start. Upserts serialise on the row, so concurrent requests count exactly.
CREATE TABLE rate_limit_counters (
    subject      text NOT NULL,
    window_name  text NOT NULL,
    window_start timestamptz NOT NULL,
    hits         integer NOT NULL,
    PRIMARY KEY (subject, window_name, window_start)
);
CREATE INDEX rate_limit_counters_start_idx ON rate_limit_counters (window_start);

CREATE TABLE audit_events (
    seq           bigint PRIMARY KEY,
    id            text NOT NULL UNIQUE,
    occurred_at   timestamptz NOT NULL,
    event_type    text NOT NULL,
    user_id       text,
    action        text NOT NULL,
    resource_type text,
    resource_id   text,
    result        text NOT NULL CHECK (result IN ('success', 'failure', 'partial_success')),
    ip_address    text,
    details       jsonb NOT NULL DEFAULT '{}'::jsonb,
    prev_hash     text NOT NULL,
    event_hash    text NOT NULL
);
CREATE INDEX audit_events_time_idx ON audit_events (occurred_at);
CREATE INDEX audit_events_user_idx ON audit_events (user_id, occurred_at);
CREATE INDEX audit_events_resource_idx ON audit_events (resource_type, resource_id);

-- The head of the hash chain: writers lock this single row, so the chain never forks.
CREATE TABLE audit_chain_head (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    seq        bigint NOT NULL,
    last_hash  text NOT NULL
);
INSERT INTO audit_chain_head (seq, last_hash) VALUES (0, 'sha256:genesis');

CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_events_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

CREATE TABLE secrets (
    name        text PRIMARY KEY,
    ciphertext  bytea NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz
);
