-- Usage components the upstream reports apart: the prompt tokens served from its prompt
-- cache (priced apart; part of tokens_input) and the reasoning tokens (part of
-- tokens_output). NULL: the upstream did not say.
ALTER TABLE llm_logs
    ADD COLUMN tokens_cached_input INTEGER,
    ADD COLUMN tokens_reasoning INTEGER;

-- The rollups add them up too (rows from before these columns have none to add).
ALTER TABLE llm_usage_hourly
    ADD COLUMN tokens_cached_input BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN tokens_reasoning BIGINT NOT NULL DEFAULT 0;
ALTER TABLE llm_usage_hourly_models
    ADD COLUMN tokens_cached_input BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN tokens_reasoning BIGINT NOT NULL DEFAULT 0;
ALTER TABLE llm_usage_pending
    ADD COLUMN tokens_cached_input BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN tokens_reasoning BIGINT NOT NULL DEFAULT 0;
