DROP FUNCTION ensure_monthly_partition(TEXT, DATE);
DROP TABLE system_logs;
DROP TABLE llm_logs;
