-- Where `llm-log-worker move-legacy` stands: the last old row id moved from a source
-- (the main database's old system_logs), the calls inserted so far, and the moved rows
-- deleted from the source since.
CREATE TABLE legacy_move_progress (
    source TEXT PRIMARY KEY,
    last_id BIGINT NOT NULL,
    moved BIGINT NOT NULL,
    deleted BIGINT NOT NULL DEFAULT 0,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
