DROP TABLE audit_log;
DROP FUNCTION audit_log_append_only();
DROP TABLE email_outbox;
DROP TABLE user_invitations;
ALTER TABLE users
    DROP COLUMN updated_at,
    DROP COLUMN password_changed_at,
    DROP COLUMN password_hash,
    DROP CONSTRAINT users_role_check;
UPDATE users SET role = 'member' WHERE role IN ('recruiter', 'viewer');
ALTER TABLE users
    ALTER COLUMN role SET DEFAULT 'member',
    ADD CONSTRAINT users_role_check CHECK (role IN ('owner', 'admin', 'member'));
