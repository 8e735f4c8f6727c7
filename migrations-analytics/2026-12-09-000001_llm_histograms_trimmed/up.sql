-- Histograms keep only the span of buckets they counted into. A stored histogram is a
-- one-dimensional BIGINT[] whose subscripts are the bucket numbers (see
-- llm_latency_bucket), from its first to its last non-empty bucket: a call of 300 ms
-- is '[27:27]={1}', a row without a value '{}'. A subscript outside the span reads as
-- NULL (no calls), so readers add coalesce(h[k], 0) up per bucket.
--
-- Most rows of the finest rollup hold a call or two: with sixty buckets spelled out,
-- their two histograms were nearly a kilobyte of zeros, more than every other column of
-- the row together, and more bytes than the raw calls behind it. Dense histograms
-- written before this migration remain valid values and are read the same way.

-- The histogram trimmed to its non-empty span ('{}' when empty).
CREATE FUNCTION llm_histogram_trim(h BIGINT[])
RETURNS BIGINT[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    lo INTEGER := array_lower(h, 1);
    hi INTEGER := array_upper(h, 1);
    trimmed BIGINT[] := '{}';
BEGIN
    IF h IS NULL OR cardinality(h) = 0 THEN
        RETURN h;
    END IF;
    WHILE lo <= hi AND coalesce(h[lo], 0) = 0 LOOP
        lo := lo + 1;
    END LOOP;
    WHILE hi >= lo AND coalesce(h[hi], 0) = 0 LOOP
        hi := hi - 1;
    END LOOP;
    -- Assigning into an empty array starts it at that subscript.
    FOR k IN lo .. hi LOOP
        trimmed[k] := coalesce(h[k], 0);
    END LOOP;
    RETURN trimmed;
END;
$$;

-- Bucket by bucket sum of two histograms of any spans, trimmed; NULL only when both are
-- (the grains that keep no histograms).
CREATE OR REPLACE FUNCTION llm_histogram_add(a BIGINT[], b BIGINT[])
RETURNS BIGINT[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    lo INTEGER := least(array_lower(a, 1), array_lower(b, 1));
    hi INTEGER := greatest(array_upper(a, 1), array_upper(b, 1));
    total BIGINT[] := '{}';
BEGIN
    IF a IS NULL OR b IS NULL THEN
        RETURN coalesce(a, b);
    ELSIF lo IS NULL THEN
        RETURN '{}';
    END IF;
    FOR k IN lo .. hi LOOP
        total[k] := coalesce(a[k], 0) + coalesce(b[k], 0);
    END LOOP;
    RETURN llm_histogram_trim(total);
END;
$$;

-- llm_histogram now hands back its histogram trimmed.
DROP AGGREGATE llm_histogram(INTEGER);
CREATE AGGREGATE llm_histogram(INTEGER) (
    SFUNC = llm_histogram_step,
    STYPE = BIGINT[],
    FINALFUNC = llm_histogram_trim,
    INITCOND = '{0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0}'
);

-- Whether h is a histogram as stored: empty, or one dimension within buckets 1..60.
CREATE FUNCTION llm_histogram_valid(h BIGINT[])
RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN h IS NULL OR cardinality(h) = 0
    OR (array_ndims(h) = 1 AND array_lower(h, 1) >= 1 AND array_upper(h, 1) <= 60);

ALTER TABLE llm_usage_hourly
    DROP CONSTRAINT llm_usage_hourly_histograms,
    ADD CONSTRAINT llm_usage_hourly_histograms CHECK (
        llm_histogram_valid(latency_ms_histogram) AND llm_histogram_valid(ttft_ms_histogram));
ALTER TABLE llm_usage_hourly_models
    DROP CONSTRAINT llm_usage_hourly_models_histograms,
    ADD CONSTRAINT llm_usage_hourly_models_histograms CHECK (
        llm_histogram_valid(latency_ms_histogram) AND llm_histogram_valid(ttft_ms_histogram));
ALTER TABLE llm_usage_hourly_grains
    DROP CONSTRAINT llm_usage_hourly_grains_histograms,
    ADD CONSTRAINT llm_usage_hourly_grains_histograms CHECK (
        llm_histogram_valid(latency_ms_histogram) AND llm_histogram_valid(ttft_ms_histogram));

-- The hour indexes of the two keyed rollups repeat the first column of their keys, which
-- serve the same hour ranges; every folded row paid for a third index entry.
DROP INDEX idx_llm_usage_hourly_hour;
DROP INDEX idx_llm_usage_hourly_models_hour;

-- The fold adds to the current hour's rows every second or so. Room left on each page
-- lets such an update stay on its page (a HOT update: no new entry in any index), where
-- full pages moved every updated row and indexed it again.
ALTER TABLE llm_usage_hourly SET (fillfactor = 70);
ALTER TABLE llm_usage_hourly_models SET (fillfactor = 70);
ALTER TABLE llm_usage_hourly_grains SET (fillfactor = 70);
