-- Append-only ledgers behind /metrics' counters. The live tables change under a restore
-- (later steps forgotten, a failed execution pending again) and cascade away with a deleted
-- workflow, but a Prometheus counter must never go down. Rows are only ever inserted, by
-- triggers, so no writer contends on a shared counter row.

CREATE TABLE step_run_ledger (
    id            bigserial PRIMARY KEY,
    step_type     text NOT NULL,
    provider      text,
    latency_ms    double precision NOT NULL,
    input_tokens  integer,
    output_tokens integer,
    recorded_at   timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION record_completed_step_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'completed' AND NEW.latency_ms IS NOT NULL
       AND (TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM 'completed') THEN
        INSERT INTO step_run_ledger (step_type, provider, latency_ms, input_tokens, output_tokens)
        VALUES (NEW.step_type, NEW.provider, NEW.latency_ms, NEW.input_tokens, NEW.output_tokens);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER step_runs_ledger
    AFTER INSERT OR UPDATE OF status ON step_runs
    FOR EACH ROW EXECUTE FUNCTION record_completed_step_run();

-- One row per status an execution enters (created as pending, then running, ...).
CREATE TABLE execution_status_ledger (
    id          bigserial PRIMARY KEY,
    status      text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION record_execution_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM NEW.status THEN
        INSERT INTO execution_status_ledger (status) VALUES (NEW.status);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER executions_status_ledger
    AFTER INSERT OR UPDATE OF status ON executions
    FOR EACH ROW EXECUTE FUNCTION record_execution_status();

-- What happened before this migration, as far as the live tables still tell.
INSERT INTO step_run_ledger (step_type, provider, latency_ms, input_tokens, output_tokens)
SELECT step_type, provider, latency_ms, input_tokens, output_tokens
FROM step_runs WHERE status = 'completed' AND latency_ms IS NOT NULL;
INSERT INTO execution_status_ledger (status) SELECT status FROM executions;
