-- Idempotency-Key on POST /workflows/{id}/execute: the first answer to a (caller, key) pair,
-- replayed for 24 hours. A row is claimed before the work starts; ``execution_id`` is set
-- as soon as an execution exists, and ``status_code``/``response`` once the answer is known.

CREATE TABLE idempotency_keys (
    owner_id      text NOT NULL,
    key           text NOT NULL,
    request_hash  text NOT NULL,
    execution_id  text,
    status_code   integer,
    response      jsonb,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (owner_id, key)
);
