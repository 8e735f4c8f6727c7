CREATE INDEX idx_llm_usage_hourly_company_hour ON llm_usage_hourly (company_id, hour);
