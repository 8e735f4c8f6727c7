-- A company's daily LLM spend alert, in USD over one of its local days (NULL: none).
ALTER TABLE companies ADD COLUMN daily_spend_alert_usd DOUBLE PRECISION CHECK (daily_spend_alert_usd > 0);

-- A company's LLM spend crossing one of its thresholds: once per threshold and period.
--   daily_spend:  the day's spend (the company's local day) reached daily_spend_alert_usd;
--   budget_share: the month's spend (UTC month, as the budget) reached a share of the budget.
CREATE TABLE spend_alerts (
    id BIGSERIAL PRIMARY KEY,
    company_id BIGINT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    kind VARCHAR(16) NOT NULL CHECK (kind IN ('daily_spend', 'budget_share')),
    -- The local day, or the first of the UTC month.
    period_start DATE NOT NULL,
    threshold_usd DOUBLE PRECISION NOT NULL CHECK (threshold_usd > 0),
    -- budget_share only: the share of the budget the threshold is.
    budget_share DOUBLE PRECISION CHECK ((kind = 'budget_share') = (budget_share IS NOT NULL)),
    -- The period's spend as it crossed.
    spent_usd DOUBLE PRECISION NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (company_id, kind, period_start, threshold_usd)
);
CREATE INDEX spend_alerts_company ON spend_alerts (company_id, id DESC);
