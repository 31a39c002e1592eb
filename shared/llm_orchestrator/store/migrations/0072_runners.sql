-- Serving processes that run executions (``llmo serve``, one per worker), and which of them
-- owns each execution's run.
--
-- A runner is alive exactly while it holds the session-level advisory lock
-- (RUNNER_LOCK_CLASS, id) on its own dedicated connection (store/runners.py): PostgreSQL
-- releases it the moment that process dies, kill -9 included, so no heartbeat is needed and
-- no clock decides. An execution whose runner holds no lock (or that has none) is an orphan;
-- a live runner claims it with one conditional update and resumes it from its checkpoint.
-- The rows here are for people and tests (which process is which); liveness is the lock.
CREATE TABLE runners (
    id         integer GENERATED ALWAYS AS IDENTITY (MAXVALUE 2147483647 CYCLE) PRIMARY KEY,
    pid        integer NOT NULL,
    hostname   text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now()
);

-- NULL: no runner yet (executions from before this migration, or the Step Functions engine).
ALTER TABLE executions ADD COLUMN runner_id integer;
