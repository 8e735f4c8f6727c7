ALTER TABLE llm_logs
    DROP COLUMN cost_saved_usd,
    DROP COLUMN cache_hit;
