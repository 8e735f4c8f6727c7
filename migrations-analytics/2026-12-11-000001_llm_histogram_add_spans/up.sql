-- Adding two stored histograms needs no trimming: each ends in non-zero buckets and
-- counts are never negative, so their sum ends in non-zero buckets too. The fold adds
-- to every rollup row it finds again (each step, the grains and most of the current
-- hour's keys), and the trimming was half the cost of an addition: 20,000 additions
-- took 120 ms, 55-63 ms without it. Histograms that are not so (empty, NULL buckets,
-- zeros at an end) take the general path, whose result is unchanged.
CREATE OR REPLACE FUNCTION llm_histogram_add(a BIGINT[], b BIGINT[])
RETURNS BIGINT[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    la INTEGER := array_lower(a, 1);
    ha INTEGER := array_upper(a, 1);
    lb INTEGER := array_lower(b, 1);
    hb INTEGER := array_upper(b, 1);
    total BIGINT[] := '{}';
BEGIN
    IF a IS NULL OR b IS NULL THEN
        RETURN coalesce(a, b);
    ELSIF la IS NULL AND lb IS NULL THEN
        RETURN '{}';
    END IF;
    IF a[la] > 0 AND a[ha] > 0 AND b[lb] > 0 AND b[hb] > 0
       AND array_position(a, NULL) IS NULL AND array_position(b, NULL) IS NULL THEN
        -- a, widened with zeros to b's span where b reaches past it, plus b.
        total := a;
        FOR k IN REVERSE la - 1 .. lb LOOP
            total[k] := 0;
        END LOOP;
        FOR k IN ha + 1 .. hb LOOP
            total[k] := 0;
        END LOOP;
        FOR k IN lb .. hb LOOP
            total[k] := total[k] + b[k];
        END LOOP;
        RETURN total;
    END IF;
    FOR k IN least(la, lb) .. greatest(ha, hb) LOOP
        total[k] := coalesce(a[k], 0) + coalesce(b[k], 0);
    END LOOP;
    RETURN llm_histogram_trim(total);
END;
$$;
