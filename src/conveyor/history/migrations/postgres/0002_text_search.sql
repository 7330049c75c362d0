-- Text search over the error message and the arguments (as stored, capped): pg_trgm GIN
-- indexes serve ILIKE '%text%' (substring, case-insensitive). pg_trgm is a trusted extension
-- (PostgreSQL 13+): a database owner may create it. If it cannot be created, the runner
-- applies 0002_text_search.fallback.sql instead.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE INDEX jobs_error_trgm ON {{schema}}.jobs USING gin (error_message gin_trgm_ops);
CREATE INDEX jobs_arguments_trgm ON {{schema}}.jobs USING gin (arguments gin_trgm_ops);
