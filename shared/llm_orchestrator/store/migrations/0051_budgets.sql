-- Monthly USD budgets per user. No row: the configured default applies
-- (LLMO_DEFAULT_MONTHLY_BUDGET_USD); a row with monthly_usd NULL: explicitly no budget.
CREATE TABLE user_budgets (
    user_id     text PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    monthly_usd numeric CHECK (monthly_usd >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    updated_by  text
);
