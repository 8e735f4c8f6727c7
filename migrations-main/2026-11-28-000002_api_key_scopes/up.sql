-- What a key may do, on top of its role: `read`, `cvs:write` (jobs and CVs), `llm`.
ALTER TABLE api_keys
    ADD COLUMN scopes TEXT[] NOT NULL DEFAULT '{read,cvs:write,llm}'
        CHECK (scopes <@ ARRAY['read', 'cvs:write', 'llm']::TEXT[] AND cardinality(scopes) > 0);
