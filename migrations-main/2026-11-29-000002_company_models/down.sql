ALTER TABLE companies DROP COLUMN allowed_models;
