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
