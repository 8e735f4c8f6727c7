-- The analytics database: high-volume logs that must never load the main database.
-- Both tables are range-partitioned by month on created_at. The worker creates the
-- monthly partitions (ensure_monthly_partition) ahead of time and on demand.
--
-- Idempotency: every event carries an event_id chosen by its producer, and its
-- created_at is fixed at the producer too, so a redelivered event has the same
-- (event_id, created_at) and ON CONFLICT DO NOTHING drops it. A unique key on a
-- partitioned table must contain the partition key, hence the pair.

CREATE TABLE llm_logs (
    id                      BIGSERIAL,
    event_id                UUID NOT NULL,
    created_at              TIMESTAMPTZ NOT NULL,
    action                  VARCHAR(100) NOT NULL,
    message                 TEXT,
    user_id                 BIGINT,
    company_id              BIGINT,
    interview_id            BIGINT,
    request_id              VARCHAR(64),
    model                   VARCHAR(100),
    -- NULL token counts mean the upstream did not report usage (usage_reported = false),
    -- never "zero tokens".
    tokens_used             INTEGER,
    tokens_input            INTEGER,
    tokens_output           INTEGER,
    usage_reported          BOOLEAN NOT NULL DEFAULT FALSE,
    cost_usd                NUMERIC(16, 10),
    price_table_version     VARCHAR(50),
    latency_ms              INTEGER,
    time_to_first_token_ms  INTEGER,
    streaming               BOOLEAN NOT NULL DEFAULT FALSE,
    http_status             SMALLINT,
    error_type              VARCHAR(100),
    error_message           TEXT,
    metadata                JSONB,
    deployment_version      VARCHAR(50),
    deployment_environment  VARCHAR(50),
    PRIMARY KEY (event_id, created_at)
) PARTITION BY RANGE (created_at);

CREATE INDEX idx_llm_logs_company_id ON llm_logs (company_id);
CREATE INDEX idx_llm_logs_created_at ON llm_logs (created_at);
CREATE INDEX idx_llm_logs_action ON llm_logs (action);
CREATE INDEX idx_llm_logs_model ON llm_logs (model);
CREATE INDEX idx_llm_logs_company_created ON llm_logs (company_id, created_at);

CREATE TABLE system_logs (
    id              BIGSERIAL,
    event_id        UUID NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    level           VARCHAR(10) NOT NULL,
    component       VARCHAR(50) NOT NULL,
    message         TEXT NOT NULL,
    request_method  VARCHAR(10),
    request_path    VARCHAR(500),
    status_code     SMALLINT,
    latency_ms      DOUBLE PRECISION,
    company_id      BIGINT,
    user_id         BIGINT,
    request_id      VARCHAR(64),
    error_type      VARCHAR(100),
    metadata        JSONB,
    PRIMARY KEY (event_id, created_at)
) PARTITION BY RANGE (created_at);

CREATE INDEX idx_system_logs_level_created ON system_logs (level, created_at);
CREATE INDEX idx_system_logs_component_created ON system_logs (component, created_at);
CREATE INDEX idx_system_logs_errors ON system_logs (error_type, created_at)
    WHERE error_type IS NOT NULL;

-- Creates the partition of `parent` that holds the month starting at `month_start`
-- (named parent_yYYYYmMM) unless it exists. Serialised by an advisory lock so that
-- several workers starting together do not race on the catalog.
CREATE FUNCTION ensure_monthly_partition(parent TEXT, month_start DATE)
RETURNS TEXT
LANGUAGE plpgsql
AS $$
DECLARE
    first_day DATE := date_trunc('month', month_start)::date;
    partition_name TEXT := format('%s_y%sm%s', parent,
        to_char(first_day, 'YYYY'), to_char(first_day, 'MM'));
BEGIN
    IF parent NOT IN ('llm_logs', 'system_logs') THEN
        RAISE EXCEPTION 'ensure_monthly_partition: unknown table %', parent;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('ensure_monthly_partition'));
    IF to_regclass(partition_name) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
            partition_name, parent, first_day, (first_day + INTERVAL '1 month')::date);
    END IF;
    RETURN partition_name;
END;
$$;
