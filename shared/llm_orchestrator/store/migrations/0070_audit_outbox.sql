-- The audit trail's outbox: events committed by their writers but not yet linked into the
-- hash chain. A writer inserts here, in its own transaction or its caller's, and takes no
-- lock; whoever holds the chain head (store/audit.py: a linker after a commit, or a reader
-- of the trail, which links first) moves the pending events into audit_events in batches,
-- in ``position`` order, computing each link as before. The chain's format and the events
-- already linked do not change.
CREATE TABLE audit_pending (
    position      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id            text NOT NULL,
    occurred_at   timestamptz NOT NULL,
    event_type    text NOT NULL,
    user_id       text,
    action        text NOT NULL,
    resource_type text,
    resource_id   text,
    result        text NOT NULL CHECK (result IN ('success', 'failure', 'partial_success')),
    ip_address    text,
    details       jsonb NOT NULL DEFAULT '{}'::jsonb
);
