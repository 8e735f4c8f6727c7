-- Usage components the upstream reports apart: the prompt tokens served from its prompt
-- cache (priced apart; part of tokens_input) and the reasoning tokens (part of
-- tokens_output). NULL: the upstream did not say.
ALTER TABLE llm_logs
    ADD COLUMN tokens_cached_input INTEGER,
    ADD COLUMN tokens_reasoning INTEGER;
