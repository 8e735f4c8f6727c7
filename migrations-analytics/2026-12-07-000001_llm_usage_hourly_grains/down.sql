DROP TABLE llm_usage_hourly_grains;
