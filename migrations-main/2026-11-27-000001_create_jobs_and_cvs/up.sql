-- Jobs a company recruits for, and the CVs it uploads. A CV row holds what the
-- recruiter filters and lists on (status, the extracted facts, a short summary);
-- the text, its chunks and their vectors live in the vector store, the original file
-- in file storage. cv-processor writes a CV row twice per run: when it starts and
-- when it finishes.

CREATE TABLE jobs (
    id            BIGSERIAL PRIMARY KEY,
    company_id    BIGINT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    title         VARCHAR(200) NOT NULL CHECK (length(btrim(title)) > 0),
    description   TEXT NOT NULL DEFAULT '',
    requirements  TEXT[] NOT NULL DEFAULT '{}',
    location      VARCHAR(200),
    status        VARCHAR(20) NOT NULL DEFAULT 'open'
                  CHECK (status IN ('draft', 'open', 'closed', 'archived')),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX jobs_company_id_idx ON jobs (company_id, id DESC);

CREATE TABLE cvs (
    id              BIGSERIAL PRIMARY KEY,
    company_id      BIGINT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    file_name       VARCHAR(255) NOT NULL,
    content_type    VARCHAR(100) NOT NULL,
    size_bytes      BIGINT NOT NULL CHECK (size_bytes >= 0),
    -- SHA-256 of the file: the same file uploaded twice by one company is one CV.
    content_hash    BYTEA NOT NULL CHECK (octet_length(content_hash) = 32),
    storage_key     VARCHAR(300) NOT NULL,
    status          VARCHAR(20) NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'processing', 'processed', 'failed')),
    -- Why a CV failed, in words a recruiter understands.
    failure_reason  TEXT,
    attempts        INT NOT NULL DEFAULT 0,
    page_count      INT,
    char_count      INT,
    section_count   INT,
    chunk_count     INT,
    -- Contacts, links, skills, roles with their years: see cv-processor's `facts`.
    facts           JSONB,
    summary         TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    processed_at    TIMESTAMPTZ
);
CREATE UNIQUE INDEX cvs_company_hash_key ON cvs (company_id, content_hash);
CREATE INDEX cvs_company_id_idx ON cvs (company_id, id DESC);
-- CVs not finished yet, oldest first: what an operator looks at when work seems stuck.
CREATE INDEX cvs_queued_idx ON cvs (updated_at) WHERE status IN ('queued', 'processing');
