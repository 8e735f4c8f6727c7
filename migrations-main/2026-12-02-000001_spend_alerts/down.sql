DROP TABLE spend_alerts;
ALTER TABLE companies DROP COLUMN daily_spend_alert_usd;
