-- Cost accounting: every provider call (an attempt, a retry, a fallback) with its tokens
-- and its cost, the admins' price overrides, and each user's spend per month.

-- Overrides of the shipped price table (providers/pricing.py), USD per million tokens.
CREATE TABLE model_prices (
    provider                text NOT NULL,
    model                   text NOT NULL,
    input_usd_per_million   numeric NOT NULL CHECK (input_usd_per_million >= 0),
    output_usd_per_million  numeric NOT NULL CHECK (output_usd_per_million >= 0),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    updated_by              text,
    PRIMARY KEY (provider, model)
);

-- Append-only, like the metric ledgers: a restore or a deleted workflow removes live step
-- runs, but money spent stays spent (for /metrics, /admin/stats and budgets).
CREATE TABLE provider_calls (
    id             bigserial PRIMARY KEY,
    execution_id   text NOT NULL,
    step_id        text NOT NULL,
    owner_id       text NOT NULL,
    provider       text NOT NULL,
    model          text NOT NULL,
    outcome        text NOT NULL,
    latency_ms     double precision NOT NULL,
    input_tokens   integer,
    output_tokens  integer,
    cost_usd       numeric,
    dimension      integer,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX provider_calls_recorded_idx ON provider_calls (recorded_at);
CREATE INDEX provider_calls_model_idx ON provider_calls (provider, model) WHERE dimension IS NOT NULL;

-- One counter row per user and month, incremented in the transaction that records the
-- calls: concurrent executions of one user serialise on it, so none is lost.
CREATE TABLE user_spend (
    owner_id   text NOT NULL,
    month      date NOT NULL,
    spent_usd  numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (owner_id, month)
);

-- The calls of a step run as the status shows them: provider, model, outcome, latency,
-- tokens and cost of each, in order. A restore that forgets a step run forgets these too.
ALTER TABLE step_runs ADD COLUMN calls jsonb;
