-- No pg_trgm: full-text indexes (whole words, 'simple' configuration: no stemming, no stop
-- words). The expressions must match the search's (conveyor/history/sql.py) to be used.
CREATE INDEX jobs_error_fts ON {{schema}}.jobs USING gin (to_tsvector('simple', coalesce(error_message, '')));
CREATE INDEX jobs_arguments_fts ON {{schema}}.jobs USING gin (to_tsvector('simple', coalesce(arguments, '')));
