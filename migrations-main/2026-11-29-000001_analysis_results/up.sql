-- An LLM's assessment of an application's CV against its job: requested through the
-- API, run by cv-processor, kept here (the cache holds finished ones for 7 days).

CREATE TABLE analysis_results (
    id              BIGSERIAL PRIMARY KEY,
    company_id      BIGINT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    application_id  BIGINT NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    requested_by    BIGINT REFERENCES users (id) ON DELETE SET NULL,
    status          VARCHAR(20) NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    -- The model that answered, as the provider named it.
    model           VARCHAR(200),
    -- The assessment (checked against its schema before it is stored).
    result          JSONB,
    failure_reason  TEXT,
    -- LLM answers it took (a malformed answer is asked again).
    attempts        INT NOT NULL DEFAULT 0,
    latency_ms      INT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at    TIMESTAMPTZ,
    CHECK ((status = 'completed') = (result IS NOT NULL))
);
CREATE INDEX analysis_results_application_idx ON analysis_results (application_id, id DESC);
-- The sweep's look for analyses left unfinished.
CREATE INDEX analysis_results_unfinished_idx ON analysis_results (updated_at) WHERE status IN ('queued', 'running');
