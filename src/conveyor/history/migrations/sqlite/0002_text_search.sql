-- Text search over the error message and the arguments (as stored, capped): FTS5 with the
-- trigram tokenizer finds any substring of three characters or more, case-insensitively.
-- External content: the index keeps no second copy of the text; triggers keep it in step.
CREATE VIRTUAL TABLE jobs_fts USING fts5(
    error_message, arguments, content='jobs', content_rowid='seq', tokenize='trigram'
);

CREATE TRIGGER jobs_fts_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO jobs_fts (rowid, error_message, arguments) VALUES (new.seq, new.error_message, new.arguments);
END;

CREATE TRIGGER jobs_fts_delete AFTER DELETE ON jobs BEGIN
    INSERT INTO jobs_fts (jobs_fts, rowid, error_message, arguments)
    VALUES ('delete', old.seq, old.error_message, old.arguments);
END;

-- Rows written before this migration (an upgrade) get indexed too.
INSERT INTO jobs_fts (jobs_fts) VALUES ('rebuild');
