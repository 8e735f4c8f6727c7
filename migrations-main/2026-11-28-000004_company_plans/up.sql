-- Which plan's rate limits and LLM budget a company is held to (the plans are the
-- gateway's `limits.plans`; NULL: its `limits.default_plan`), and its own monthly LLM
-- budget in USD, replacing the plan's.
ALTER TABLE companies
    ADD COLUMN plan VARCHAR(40),
    ADD COLUMN llm_budget_usd DOUBLE PRECISION CHECK (llm_budget_usd >= 0);
