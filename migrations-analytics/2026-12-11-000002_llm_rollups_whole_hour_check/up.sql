-- The rollups' whole-hour checks bin by a fixed hour from a UTC origin instead of
-- truncating in the 'UTC' zone: the same hours, without a time zone lookup per row
-- (200,000 checked rows: 62 ms over an unchecked insert with date_trunc, 10 ms with
-- date_bin).
ALTER TABLE llm_usage_hourly
    DROP CONSTRAINT llm_usage_hourly_whole_hour,
    ADD CONSTRAINT llm_usage_hourly_whole_hour CHECK (hour = date_bin('1 hour', hour, '2000-01-01 00:00:00+00'));
ALTER TABLE llm_usage_hourly_models
    DROP CONSTRAINT llm_usage_hourly_models_whole_hour,
    ADD CONSTRAINT llm_usage_hourly_models_whole_hour CHECK (hour = date_bin('1 hour', hour, '2000-01-01 00:00:00+00'));
ALTER TABLE llm_usage_hourly_grains
    DROP CONSTRAINT llm_usage_hourly_grains_whole_hour,
    ADD CONSTRAINT llm_usage_hourly_grains_whole_hour CHECK (hour = date_bin('1 hour', hour, '2000-01-01 00:00:00+00'));
