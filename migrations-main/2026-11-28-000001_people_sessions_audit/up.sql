-- People who sign in, the invitations that bring them in, the mail we would send,
-- and the audit trail of every change made through the API.

-- Roles: owner > admin > recruiter > viewer (what each may do: api-gateway's `access`).
ALTER TABLE users DROP CONSTRAINT users_role_check;
UPDATE users SET role = 'recruiter' WHERE role = 'member';
ALTER TABLE users
    ALTER COLUMN role SET DEFAULT 'recruiter',
    ADD CONSTRAINT users_role_check CHECK (role IN ('owner', 'admin', 'recruiter', 'viewer')),
    -- Argon2id in PHC string form; NULL until the user sets one (accepting an invitation).
    ADD COLUMN password_hash TEXT,
    ADD COLUMN password_changed_at TIMESTAMPTZ,
    ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT now();

-- An invitation to join a company with a role. Only a SHA-256 digest of the token is
-- kept; the token itself travels once, in the email (the outbox below).
CREATE TABLE user_invitations (
    id            BIGSERIAL PRIMARY KEY,
    company_id    BIGINT NOT NULL REFERENCES companies (id) ON DELETE CASCADE,
    email         VARCHAR(320) NOT NULL,
    role          VARCHAR(20) NOT NULL CHECK (role IN ('owner', 'admin', 'recruiter', 'viewer')),
    token_hash    BYTEA NOT NULL UNIQUE CHECK (octet_length(token_hash) = 32),
    invited_by    BIGINT REFERENCES users (id) ON DELETE SET NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at    TIMESTAMPTZ NOT NULL,
    accepted_at   TIMESTAMPTZ,
    accepted_user BIGINT REFERENCES users (id) ON DELETE SET NULL,
    revoked_at    TIMESTAMPTZ
);
CREATE INDEX user_invitations_company_idx ON user_invitations (company_id, id DESC);
-- One open invitation per address and company: a second invite is a resend.
CREATE UNIQUE INDEX user_invitations_open_key ON user_invitations (company_id, lower(email))
    WHERE accepted_at IS NULL AND revoked_at IS NULL;

-- Mail the system would send. A mailer (none runs here) delivers rows with
-- `sent_at` NULL and stamps them; until then an operator can read them.
CREATE TABLE email_outbox (
    id          BIGSERIAL PRIMARY KEY,
    company_id  BIGINT REFERENCES companies (id) ON DELETE CASCADE,
    recipient   VARCHAR(320) NOT NULL,
    subject     TEXT NOT NULL,
    body        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    sent_at     TIMESTAMPTZ
);
CREATE INDEX email_outbox_unsent_idx ON email_outbox (id) WHERE sent_at IS NULL;

-- Who did what, when and from where. Written in the same transaction as the change it
-- describes. `company_id` is not a foreign key: the trail outlives what it describes.
CREATE TABLE audit_log (
    id              BIGSERIAL PRIMARY KEY,
    company_id      BIGINT,
    actor_user_id   BIGINT,
    actor_key_id    BIGINT,
    -- 'user', 'api_key', 'admin' (the operator's ADMIN_API_KEY) or 'anonymous'
    -- (accepting an invitation, a failed login has no actor yet).
    actor_kind      VARCHAR(20) NOT NULL,
    action          VARCHAR(60) NOT NULL,
    object_type     VARCHAR(40) NOT NULL,
    object_id       BIGINT,
    before          JSONB,
    after           JSONB,
    ip              VARCHAR(64),
    user_agent      VARCHAR(300),
    request_id      VARCHAR(128),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_company_idx ON audit_log (company_id, id DESC);

-- Append-only for everyone, whatever grants the application's role holds.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only (% refused)', TG_OP;
END;
$$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
