-- The rollups follow the raw rows instead of being added to by each batch.
--
-- Every writer stores its own transaction id in `inserted_by` (the worker's COPY and
-- INSERT paths, the legacy move). One worker at a time folds the raw rows past the
-- watermark into the rollups, in large steps: the rows whose `inserted_by` lies in
-- [rolled_up_to, pg_snapshot_xmin(pg_current_snapshot())). Every transaction below the
-- snapshot's xmin has ended, so no row can later appear below the new watermark: a
-- batch that commits late is folded by a later step, one that rolled back left no row,
-- a redelivered event inserted no row. The batch itself does no rollup work, which was
-- a third of its write time when every batch aggregated what it inserted.
--
-- A transaction that stays open holds the watermark back (the rollups lag, nothing is
-- lost): llm_usage_backlog shows what waits. `inserted_by` is a transaction id of this
-- cluster: a physical copy keeps them, a logical restore into another cluster does not
-- (the worker then refuses to fold and says so; rebuild the rollups and set the
-- watermark to the new cluster's pg_snapshot_xmin(pg_current_snapshot())).
--
-- Rows written before this migration (and by workers of the previous version during a
-- rolling update, which still add to llm_usage_pending) have no `inserted_by`; their
-- calls reach the rollups through llm_usage_pending, which the compaction still drains.
-- No default, so that such a row is never counted twice.

ALTER TABLE llm_logs ADD COLUMN inserted_by xid8;
CREATE INDEX idx_llm_logs_inserted_by ON llm_logs (inserted_by) WHERE inserted_by IS NOT NULL;

CREATE TABLE llm_usage_watermark (
    only_row        BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    -- Raw rows with a lower inserted_by are in the rollups.
    rolled_up_to    xid8 NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO llm_usage_watermark (rolled_up_to) VALUES (pg_current_xact_id());

-- What the rollups do not hold yet: raw rows past the watermark, pending rows of the
-- previous version's writers.
CREATE VIEW llm_usage_backlog AS
SELECT (SELECT count(*) FROM llm_logs
         WHERE inserted_by >= (SELECT rolled_up_to FROM llm_usage_watermark)) AS raw_rows,
       (SELECT count(*) FROM llm_usage_pending) AS pending_rows,
       (SELECT rolled_up_to FROM llm_usage_watermark) AS rolled_up_to,
       (SELECT updated_at FROM llm_usage_watermark) AS updated_at;
