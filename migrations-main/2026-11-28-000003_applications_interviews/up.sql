-- A candidate's application to a job (from one of the company's CVs), the interviews
-- scheduled on it, and what each interviewer thought.

CREATE TABLE applications (
    id          BIGSERIAL PRIMARY KEY,
    company_id  BIGINT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    job_id      BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    cv_id       BIGINT NOT NULL REFERENCES cvs (id) ON DELETE CASCADE,
    stage       VARCHAR(20) NOT NULL DEFAULT 'applied'
                CHECK (stage IN ('applied', 'screening', 'interview', 'offer', 'hired', 'rejected')),
    notes       TEXT,
    created_by  BIGINT REFERENCES users (id) ON DELETE SET NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- One application per CV and job.
CREATE UNIQUE INDEX applications_job_cv_key ON applications (job_id, cv_id);
CREATE INDEX applications_company_idx ON applications (company_id, id DESC);

CREATE TABLE interviews (
    id                BIGSERIAL PRIMARY KEY,
    company_id        BIGINT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    application_id    BIGINT NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    scheduled_at      TIMESTAMPTZ NOT NULL,
    duration_minutes  INT NOT NULL DEFAULT 60 CHECK (duration_minutes BETWEEN 5 AND 480),
    kind              VARCHAR(20) NOT NULL DEFAULT 'video'
                      CHECK (kind IN ('phone', 'video', 'onsite', 'technical')),
    status            VARCHAR(20) NOT NULL DEFAULT 'scheduled'
                      CHECK (status IN ('scheduled', 'completed', 'cancelled')),
    -- User ids of the interviewers (checked to be the company's active people).
    participants      BIGINT[] NOT NULL DEFAULT '{}',
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX interviews_application_idx ON interviews (application_id, id DESC);
CREATE INDEX interviews_company_idx ON interviews (company_id, id DESC);

CREATE TABLE interview_feedback (
    id              BIGSERIAL PRIMARY KEY,
    company_id      BIGINT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    interview_id    BIGINT NOT NULL REFERENCES interviews (id) ON DELETE CASCADE,
    author_id       BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    rating          SMALLINT NOT NULL CHECK (rating BETWEEN 1 AND 5),
    recommendation  VARCHAR(20) NOT NULL CHECK (recommendation IN ('strong_no', 'no', 'yes', 'strong_yes')),
    comments        TEXT NOT NULL DEFAULT '',
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- One opinion per interviewer and interview (given again, it replaces the first).
CREATE UNIQUE INDEX interview_feedback_author_key ON interview_feedback (interview_id, author_id);
