CREATE INDEX idx_llm_usage_hourly_grains_sums ON llm_usage_hourly_grains (grain, hour)
    INCLUDE (company_id, action, model, calls, errors, calls_without_usage, unpriced_calls, tokens_input,
             tokens_output, cost_usd, cache_hits, cost_saved_usd, streaming_calls, latency_ms_sum,
             tokens_cached_input, tokens_reasoning)
    WHERE grain IN (7, 13, 14);
DROP TABLE llm_usage_hourly_totals;
