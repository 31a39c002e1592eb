-- The outbox's events carry a MAC: the writer computes it when it inserts the event
-- (HMAC-SHA-256 under the chain's key, domain-separated from the chain's hash; see
-- audit/trail.py), and the linker links a pending event only if it recomputes the same MAC.
-- Without it, anyone holding only the database's credentials could insert an event there
-- and have the linker chain it with the real HMAC.
--
-- Events already pending when this runs were written without a MAC, and only the
-- application holds the key, so they cannot be given one here. They are marked ``legacy``
-- and linked as before. The application role may not set ``legacy`` (nor ``position``): it
-- may only INSERT the event's columns and ``mac`` (store/roles.py), and may not UPDATE, so
-- every row it inserts from now on has ``legacy = false`` and needs a valid MAC.
ALTER TABLE audit_pending
    ADD COLUMN mac text,
    ADD COLUMN legacy boolean NOT NULL DEFAULT true;
ALTER TABLE audit_pending ALTER COLUMN legacy SET DEFAULT false;

-- Pending rows the linker refused (a MAC that does not match, an id already in the chain or
-- repeated in the outbox): moved here, never linked from here, kept as evidence. Each one
-- also gets an ``audit.pending_rejected`` event of its own in the chain.
CREATE TABLE audit_pending_rejected (
    position      bigint PRIMARY KEY,
    id            text NOT NULL,
    occurred_at   timestamptz NOT NULL,
    event_type    text NOT NULL,
    user_id       text,
    action        text NOT NULL,
    resource_type text,
    resource_id   text,
    result        text NOT NULL,
    ip_address    text,
    details       jsonb NOT NULL,
    mac           text,
    legacy        boolean NOT NULL,
    reason        text NOT NULL,
    rejected_at   timestamptz NOT NULL DEFAULT now()
);
