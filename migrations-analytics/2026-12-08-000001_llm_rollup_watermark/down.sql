DROP VIEW llm_usage_backlog;
DROP TABLE llm_usage_watermark;
DROP INDEX idx_llm_logs_inserted_by;
ALTER TABLE llm_logs DROP COLUMN inserted_by;
