-- A coarser grain of llm_usage_hourly without the user and interview keys: one row per
-- (UTC hour, company, action, model, error_type). Keyed by user and interview, an hour's
-- rollup rows are nearly as many as its calls under real traffic (each call is a new
-- combination), so the dashboard's main figures (per day, per model, per company) read
-- this table instead: a company's busy hour is a few dozen rows here. Breakdowns by user
-- or interview read llm_usage_hourly.
--
-- Kept by the same compaction that folds llm_usage_pending into llm_usage_hourly (the
-- moved rows are added to both in one statement), and rebuilt with it.

CREATE TABLE llm_usage_hourly_models (
    hour                    TIMESTAMPTZ NOT NULL,
    company_id              BIGINT,
    action                  VARCHAR(100) NOT NULL,
    model                   VARCHAR(100),
    error_type              VARCHAR(100),
    calls                   BIGINT NOT NULL,
    calls_without_usage     BIGINT NOT NULL,
    unpriced_calls          BIGINT NOT NULL,
    tokens_input            BIGINT NOT NULL,
    tokens_output           BIGINT NOT NULL,
    cost_usd                NUMERIC(24, 10) NOT NULL,
    cache_hits              BIGINT NOT NULL,
    cost_saved_usd          NUMERIC(24, 10) NOT NULL,
    streaming_calls         BIGINT NOT NULL,
    latency_ms_sum          BIGINT NOT NULL,
    latency_ms_histogram    BIGINT[] NOT NULL,
    ttft_ms_histogram       BIGINT[] NOT NULL,
    CONSTRAINT llm_usage_hourly_models_key UNIQUE NULLS NOT DISTINCT (hour, company_id, action, model, error_type),
    CONSTRAINT llm_usage_hourly_models_whole_hour CHECK (hour = date_trunc('hour', hour, 'UTC')),
    CONSTRAINT llm_usage_hourly_models_histograms CHECK (
        cardinality(latency_ms_histogram) = 60 AND cardinality(ttft_ms_histogram) = 60)
);

CREATE INDEX idx_llm_usage_hourly_models_company_hour ON llm_usage_hourly_models (company_id, hour);
CREATE INDEX idx_llm_usage_hourly_models_hour ON llm_usage_hourly_models (hour);

INSERT INTO llm_usage_hourly_models
SELECT hour, company_id, action, model, error_type, sum(calls), sum(calls_without_usage), sum(unpriced_calls),
       sum(tokens_input), sum(tokens_output), sum(cost_usd), sum(cache_hits), sum(cost_saved_usd),
       sum(streaming_calls), sum(latency_ms_sum), llm_histogram_merge(latency_ms_histogram),
       llm_histogram_merge(ttft_ms_histogram)
FROM llm_usage_hourly
GROUP BY hour, company_id, action, model, error_type;
