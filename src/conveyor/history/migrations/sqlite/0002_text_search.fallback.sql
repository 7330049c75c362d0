-- This SQLite has no FTS5 or no trigram tokenizer (before 3.34): text search scans with LIKE.
SELECT 1;
