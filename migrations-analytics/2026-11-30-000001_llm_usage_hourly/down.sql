DROP TABLE llm_usage_pending;
DROP TABLE llm_usage_hourly;
DROP AGGREGATE llm_histogram_merge(BIGINT[]);
DROP FUNCTION llm_histogram_add(BIGINT[], BIGINT[]);
DROP AGGREGATE llm_histogram(INTEGER);
DROP FUNCTION llm_histogram_step(BIGINT[], INTEGER);
DROP FUNCTION llm_latency_bucket(INTEGER);
