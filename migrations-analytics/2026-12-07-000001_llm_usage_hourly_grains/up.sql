-- Small grains of the hourly rollups for the figures the dashboard and the analytics API
-- ask for most: one table, one row per (grain, UTC hour, keys of that grain). `grain` is
-- PostgreSQL's GROUPING(company_id, user_id, action, model) of the grouping set the row
-- was summed by: a bit is set for each key summed away (company_id 8, user_id 4,
-- action 2, model 1), and the keys a grain does not have are NULL. The grains kept:
--
--   14  model                   every company's calls per model
--   13  action                  every company's calls per action
--    7  company_id              a company's calls
--    6  company_id, model       a company's calls per model
--    5  company_id, action      a company's calls per action
--    3  company_id, user_id     a company's calls per user (no histograms)
--
-- A month of a busy company is a few thousand rows in each of the first five, where
-- llm_usage_hourly_models holds several per hour and model (actions and error types) and
-- llm_usage_hourly nearly one per call; the all-company grains hold no company key at
-- all. Errors are a count of their own here (no error_type key). The per-user grain
-- keeps no histograms (NULL): percentiles by user read llm_usage_hourly.
--
-- Kept by the same compaction that folds llm_usage_pending into llm_usage_hourly (all
-- grains summed from the moved rows in one GROUPING SETS statement), rebuilt with it.

CREATE TABLE llm_usage_hourly_grains (
    grain                   SMALLINT NOT NULL,
    hour                    TIMESTAMPTZ NOT NULL,
    company_id              BIGINT,
    user_id                 BIGINT,
    action                  VARCHAR(100),
    model                   VARCHAR(100),
    calls                   BIGINT NOT NULL,
    errors                  BIGINT NOT NULL,
    calls_without_usage     BIGINT NOT NULL,
    unpriced_calls          BIGINT NOT NULL,
    tokens_input            BIGINT NOT NULL,
    tokens_output           BIGINT NOT NULL,
    cost_usd                NUMERIC(24, 10) NOT NULL,
    cache_hits              BIGINT NOT NULL,
    cost_saved_usd          NUMERIC(24, 10) NOT NULL,
    streaming_calls         BIGINT NOT NULL,
    latency_ms_sum          BIGINT NOT NULL,
    tokens_cached_input     BIGINT NOT NULL,
    tokens_reasoning        BIGINT NOT NULL,
    latency_ms_histogram    BIGINT[],
    ttft_ms_histogram       BIGINT[],
    CONSTRAINT llm_usage_hourly_grains_key UNIQUE NULLS NOT DISTINCT (grain, hour, company_id, user_id, action, model),
    CONSTRAINT llm_usage_hourly_grains_whole_hour CHECK (hour = date_trunc('hour', hour, 'UTC')),
    CONSTRAINT llm_usage_hourly_grains_histograms CHECK (
        (latency_ms_histogram IS NULL OR cardinality(latency_ms_histogram) = 60)
        AND (ttft_ms_histogram IS NULL OR cardinality(ttft_ms_histogram) = 60))
);

-- The key serves (grain, hour) reads of every company; this one a company's.
CREATE INDEX idx_llm_usage_hourly_grains_company ON llm_usage_hourly_grains (grain, company_id, hour);
-- The operator's rankings over every company (top companies, top actions) read only
-- sums of the all-company grains; this index holds those sums, so they are read from
-- it alone (an index-only scan), never from the rows with their histograms, which lie
-- one to a page among the other grains' rows (a month of the per-company grain: about
-- 25 ms from here, 250 ms from the rows).
CREATE INDEX idx_llm_usage_hourly_grains_sums ON llm_usage_hourly_grains (grain, hour)
    INCLUDE (company_id, action, model, calls, errors, calls_without_usage, unpriced_calls, tokens_input,
             tokens_output, cost_usd, cache_hits, cost_saved_usd, streaming_calls, latency_ms_sum,
             tokens_cached_input, tokens_reasoning)
    WHERE grain IN (7, 13, 14);

INSERT INTO llm_usage_hourly_grains
SELECT GROUPING(company_id, user_id, action, model), hour, company_id, user_id, action, model, sum(calls),
       sum(CASE WHEN error_type IS NULL THEN 0 ELSE calls END), sum(calls_without_usage), sum(unpriced_calls),
       sum(tokens_input), sum(tokens_output), sum(cost_usd), sum(cache_hits), sum(cost_saved_usd),
       sum(streaming_calls), sum(latency_ms_sum), sum(tokens_cached_input), sum(tokens_reasoning),
       CASE WHEN GROUPING(user_id) = 0 THEN NULL ELSE llm_histogram_merge(latency_ms_histogram) END,
       CASE WHEN GROUPING(user_id) = 0 THEN NULL ELSE llm_histogram_merge(ttft_ms_histogram) END
FROM llm_usage_hourly
GROUP BY GROUPING SETS ((hour, model), (hour, action), (hour, company_id), (hour, company_id, model),
                        (hour, company_id, action), (hour, company_id, user_id));
