-- Hourly rollups of llm_logs, in UTC hours so that any timezone's days and weeks can be
-- cut from them (a UTC day cannot be re-cut into another zone's day).
--
-- One row per (hour, company, user, interview, action, model, error_type); error_type is
-- NULL for calls that succeeded, so errors by type are rows of their own. The
-- transaction that inserts a batch of raw rows also aggregates the rows it inserted
-- (xmin) into llm_usage_pending, an append-only table without keys, so concurrent
-- batches never wait on each other; one worker at a time (advisory lock) moves pending
-- rows into llm_usage_hourly, adding them up. A redelivered event was not inserted and
-- adds nothing; a rolled-back batch adds nothing. `llm-log-worker rebuild-rollups`
-- recomputes any range from the raw rows.
--
-- Latency and time to first token are stored as histograms over fixed geometric
-- buckets, so percentiles merge across hours, companies and models by adding the
-- arrays: element 1 counts values under 1 ms; element k (2..59) counts values in
-- [1.25^(k-2), 1.25^(k-1)) ms; element 60 counts values from 1.25^58 ms (about 7 min).
-- A percentile read from them is within one bucket: 25 %, about 12 % from the bucket's
-- geometric middle.

CREATE FUNCTION llm_latency_bucket(ms INTEGER)
RETURNS INTEGER
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN ms < 1 THEN 1 ELSE least(60, 2 + floor(ln(ms::float8) / ln(1.25))::integer) END;

-- Aggregate step: counts `ms` (NULL: not counted) into a 60-element histogram.
CREATE FUNCTION llm_histogram_step(state BIGINT[], ms INTEGER)
RETURNS BIGINT[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    b INTEGER;
BEGIN
    IF ms IS NOT NULL THEN
        b := llm_latency_bucket(ms);
        state[b] := state[b] + 1;
    END IF;
    RETURN state;
END;
$$;

CREATE AGGREGATE llm_histogram(INTEGER) (
    SFUNC = llm_histogram_step,
    STYPE = BIGINT[],
    INITCOND = '{0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0}'
);

-- Element-wise sum of two histograms of equal length.
CREATE FUNCTION llm_histogram_add(a BIGINT[], b BIGINT[])
RETURNS BIGINT[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ARRAY(SELECT x + y FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i) ORDER BY i);

-- Merges histograms across rows (hours, groups) for reading.
CREATE AGGREGATE llm_histogram_merge(BIGINT[]) (
    SFUNC = llm_histogram_add,
    STYPE = BIGINT[],
    INITCOND = '{0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0}'
);

CREATE TABLE llm_usage_hourly (
    hour                    TIMESTAMPTZ NOT NULL,
    company_id              BIGINT,
    user_id                 BIGINT,
    interview_id            BIGINT,
    action                  VARCHAR(100) NOT NULL,
    model                   VARCHAR(100),
    error_type              VARCHAR(100),
    calls                   BIGINT NOT NULL,
    -- Calls whose upstream reported no usage (their tokens are unknown, not zero).
    calls_without_usage     BIGINT NOT NULL,
    -- Upstream calls with usage but no price for their model: cost unknown, not $0.
    unpriced_calls          BIGINT NOT NULL,
    tokens_input            BIGINT NOT NULL,
    tokens_output           BIGINT NOT NULL,
    cost_usd                NUMERIC(24, 10) NOT NULL,
    -- Calls answered from our LLM results cache, and what they would have cost.
    cache_hits              BIGINT NOT NULL,
    cost_saved_usd          NUMERIC(24, 10) NOT NULL,
    streaming_calls         BIGINT NOT NULL,
    latency_ms_sum          BIGINT NOT NULL,
    latency_ms_histogram    BIGINT[] NOT NULL,
    ttft_ms_histogram       BIGINT[] NOT NULL,
    CONSTRAINT llm_usage_hourly_key UNIQUE NULLS NOT DISTINCT
        (hour, company_id, user_id, interview_id, action, model, error_type),
    CONSTRAINT llm_usage_hourly_whole_hour CHECK (hour = date_trunc('hour', hour, 'UTC')),
    CONSTRAINT llm_usage_hourly_histograms CHECK (
        cardinality(latency_ms_histogram) = 60 AND cardinality(ttft_ms_histogram) = 60)
);

CREATE INDEX idx_llm_usage_hourly_company_hour ON llm_usage_hourly (company_id, hour);
CREATE INDEX idx_llm_usage_hourly_hour ON llm_usage_hourly (hour);

-- Batches' additions not yet folded into llm_usage_hourly (seconds' worth).
CREATE TABLE llm_usage_pending (LIKE llm_usage_hourly INCLUDING DEFAULTS);
