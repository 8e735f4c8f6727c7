-- The timezone a company's analytics are cut in (days, weeks, months): an IANA name
-- such as Europe/Berlin or Asia/Kolkata. A request may override it.
ALTER TABLE companies ADD COLUMN timezone VARCHAR(64) NOT NULL DEFAULT 'UTC';
