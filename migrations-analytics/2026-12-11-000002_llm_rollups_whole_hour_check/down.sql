ALTER TABLE llm_usage_hourly
    DROP CONSTRAINT llm_usage_hourly_whole_hour,
    ADD CONSTRAINT llm_usage_hourly_whole_hour CHECK (hour = date_trunc('hour', hour, 'UTC'));
ALTER TABLE llm_usage_hourly_models
    DROP CONSTRAINT llm_usage_hourly_models_whole_hour,
    ADD CONSTRAINT llm_usage_hourly_models_whole_hour CHECK (hour = date_trunc('hour', hour, 'UTC'));
ALTER TABLE llm_usage_hourly_grains
    DROP CONSTRAINT llm_usage_hourly_grains_whole_hour,
    ADD CONSTRAINT llm_usage_hourly_grains_whole_hour CHECK (hour = date_trunc('hour', hour, 'UTC'));
