-- Every read of llm_usage_hourly joins its whole hours one by one (hour = h, then the
-- company when there is one), which the key (hour, company_id, ...) serves: a
-- company's month is 720 short probes of it, as fast as the company index's range
-- (about 50 ms over two million rows either way). The fold inserts tens of thousands
-- of rows a step here, each paying for every index: a 36,000-row step's addition took
-- 0.42-0.44 s with this index and 0.38-0.43 s without (three runs each).
DROP INDEX idx_llm_usage_hourly_company_hour;
