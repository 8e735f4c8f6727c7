-- The sums of the all-company grains (14 per model, 13 per action, 7 per company; see
-- llm_usage_hourly_grains) once more, without histograms, for the operator's rankings
-- over every company, which read sums only.
--
-- They were read from an index of llm_usage_hourly_grains that held these sums
-- (idx_llm_usage_hourly_grains_sums), so that a month of the per-company grain was
-- read from the index alone (about 25 ms) rather than from the wide rows with their
-- histograms (about 250 ms). But an index holding the sums makes every update of
-- llm_usage_hourly_grains change an indexed column, so none was a HOT update: each
-- fold step's thousands of grain updates wrote a new entry into every index of the
-- table. This narrow table holds the same sums in a few hundred rows an hour, with
-- only its key indexed; the grains' updates can stay on their page.
--
-- Kept by the same fold step as the grains (from the same sums), rebuilt with them.

CREATE TABLE llm_usage_hourly_totals (
    grain                   SMALLINT NOT NULL,
    hour                    TIMESTAMPTZ NOT NULL,
    company_id              BIGINT,
    action                  VARCHAR(100),
    model                   VARCHAR(100),
    errors                  BIGINT NOT NULL,
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
    tokens_cached_input     BIGINT NOT NULL,
    tokens_reasoning        BIGINT NOT NULL,
    CONSTRAINT llm_usage_hourly_totals_key UNIQUE NULLS NOT DISTINCT (grain, hour, company_id, action, model),
    CONSTRAINT llm_usage_hourly_totals_grain CHECK (grain IN (7, 13, 14)),
    CONSTRAINT llm_usage_hourly_totals_whole_hour CHECK (hour = date_bin('1 hour', hour, '2000-01-01 00:00:00+00'))
) WITH (fillfactor = 70);

INSERT INTO llm_usage_hourly_totals
SELECT grain, hour, company_id, action, model, errors, calls, calls_without_usage, unpriced_calls, tokens_input,
       tokens_output, cost_usd, cache_hits, cost_saved_usd, streaming_calls, latency_ms_sum, tokens_cached_input,
       tokens_reasoning
FROM llm_usage_hourly_grains WHERE grain IN (7, 13, 14);

DROP INDEX idx_llm_usage_hourly_grains_sums;
