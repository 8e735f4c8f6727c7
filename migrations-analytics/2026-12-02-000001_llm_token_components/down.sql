ALTER TABLE llm_usage_pending DROP COLUMN tokens_reasoning, DROP COLUMN tokens_cached_input;
ALTER TABLE llm_usage_hourly_models DROP COLUMN tokens_reasoning, DROP COLUMN tokens_cached_input;
ALTER TABLE llm_usage_hourly DROP COLUMN tokens_reasoning, DROP COLUMN tokens_cached_input;
ALTER TABLE llm_logs
    DROP COLUMN tokens_reasoning,
    DROP COLUMN tokens_cached_input;
