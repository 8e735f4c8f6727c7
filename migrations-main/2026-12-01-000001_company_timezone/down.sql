ALTER TABLE companies DROP COLUMN timezone;
