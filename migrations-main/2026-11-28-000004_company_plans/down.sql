ALTER TABLE companies DROP COLUMN llm_budget_usd, DROP COLUMN plan;
