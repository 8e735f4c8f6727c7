ALTER TABLE llm_usage_hourly RESET (fillfactor);
ALTER TABLE llm_usage_hourly_models RESET (fillfactor);
ALTER TABLE llm_usage_hourly_grains RESET (fillfactor);
CREATE INDEX idx_llm_usage_hourly_hour ON llm_usage_hourly (hour);
CREATE INDEX idx_llm_usage_hourly_models_hour ON llm_usage_hourly_models (hour);

-- Back to sixty buckets spelled out in every stored histogram.
CREATE FUNCTION llm_histogram_dense(h BIGINT[])
RETURNS BIGINT[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN h IS NULL THEN NULL
            ELSE ARRAY(SELECT coalesce(h[k], 0) FROM generate_series(1, 60) AS k ORDER BY k) END;

ALTER TABLE llm_usage_hourly DROP CONSTRAINT llm_usage_hourly_histograms;
ALTER TABLE llm_usage_hourly_models DROP CONSTRAINT llm_usage_hourly_models_histograms;
ALTER TABLE llm_usage_hourly_grains DROP CONSTRAINT llm_usage_hourly_grains_histograms;
UPDATE llm_usage_hourly SET latency_ms_histogram = llm_histogram_dense(latency_ms_histogram),
    ttft_ms_histogram = llm_histogram_dense(ttft_ms_histogram);
UPDATE llm_usage_hourly_models SET latency_ms_histogram = llm_histogram_dense(latency_ms_histogram),
    ttft_ms_histogram = llm_histogram_dense(ttft_ms_histogram);
UPDATE llm_usage_hourly_grains SET latency_ms_histogram = llm_histogram_dense(latency_ms_histogram),
    ttft_ms_histogram = llm_histogram_dense(ttft_ms_histogram);
UPDATE llm_usage_pending SET latency_ms_histogram = llm_histogram_dense(latency_ms_histogram),
    ttft_ms_histogram = llm_histogram_dense(ttft_ms_histogram);
ALTER TABLE llm_usage_hourly ADD CONSTRAINT llm_usage_hourly_histograms CHECK (
    cardinality(latency_ms_histogram) = 60 AND cardinality(ttft_ms_histogram) = 60);
ALTER TABLE llm_usage_hourly_models ADD CONSTRAINT llm_usage_hourly_models_histograms CHECK (
    cardinality(latency_ms_histogram) = 60 AND cardinality(ttft_ms_histogram) = 60);
ALTER TABLE llm_usage_hourly_grains ADD CONSTRAINT llm_usage_hourly_grains_histograms CHECK (
    (latency_ms_histogram IS NULL OR cardinality(latency_ms_histogram) = 60)
    AND (ttft_ms_histogram IS NULL OR cardinality(ttft_ms_histogram) = 60));
DROP FUNCTION llm_histogram_dense(BIGINT[]);
DROP FUNCTION llm_histogram_valid(BIGINT[]);

DROP AGGREGATE llm_histogram(INTEGER);
CREATE AGGREGATE llm_histogram(INTEGER) (
    SFUNC = llm_histogram_step,
    STYPE = BIGINT[],
    INITCOND = '{0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0}'
);

CREATE OR REPLACE FUNCTION llm_histogram_add(a BIGINT[], b BIGINT[])
RETURNS BIGINT[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN ARRAY(SELECT x + y FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i) ORDER BY i);

DROP FUNCTION llm_histogram_trim(BIGINT[]);
