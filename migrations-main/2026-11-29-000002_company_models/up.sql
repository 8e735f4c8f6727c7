-- The models a company may call through the gateway (names as in the gateway's price
-- table; a dated version of a listed model is allowed with it). NULL: every model the
-- price table serves.
ALTER TABLE companies ADD COLUMN allowed_models TEXT[]
    CHECK (allowed_models IS NULL OR cardinality(allowed_models) BETWEEN 1 AND 100);
