ALTER TABLE llm_logs
    DROP COLUMN tokens_reasoning,
    DROP COLUMN tokens_cached_input;
