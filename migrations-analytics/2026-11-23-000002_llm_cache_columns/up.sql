-- Calls answered from the LLM results cache: no upstream call was made, so cost_usd is
-- 0 and cost_saved_usd holds what the call would have cost.
ALTER TABLE llm_logs
    ADD COLUMN cache_hit BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN cost_saved_usd NUMERIC(16, 10);
