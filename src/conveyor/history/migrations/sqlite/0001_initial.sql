-- Times are integers: microseconds since the Unix epoch, UTC. Durations are milliseconds.
-- seq is the rowid: the keyset tie-breaker after finished_at, and the FTS5 rowid.
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    queue TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    state TEXT NOT NULL,
    finished_at INTEGER NOT NULL,
    task TEXT NOT NULL,
    arguments TEXT,
    result TEXT,
    error_type TEXT,
    error_message TEXT,
    traceback TEXT,
    truncated INTEGER NOT NULL DEFAULT 0,
    priority INTEGER NOT NULL DEFAULT 0,
    group_key TEXT,
    parent_queue TEXT,
    parent_id TEXT,
    flow TEXT,
    schedule TEXT,
    enqueued_at INTEGER,
    scheduled_for INTEGER,
    started_at INTEGER,
    wait_ms REAL,
    run_ms REAL,
    worker TEXT,
    -- What makes a write idempotent; id first, so a lookup by id alone uses it too.
    UNIQUE (id, queue, attempts, state, finished_at)
);

CREATE INDEX jobs_finished ON jobs (finished_at, seq);
-- Covers the stats of a task (no table lookups): the columns after seq are what stats read.
CREATE INDEX jobs_task ON jobs (task, finished_at, seq, queue, state, wait_ms, run_ms);
CREATE INDEX jobs_queue ON jobs (queue, finished_at, seq);
CREATE INDEX jobs_state ON jobs (state, finished_at, seq);
CREATE INDEX jobs_group ON jobs (group_key, finished_at, seq) WHERE group_key IS NOT NULL;
CREATE INDEX jobs_worker ON jobs (worker, finished_at, seq);

CREATE TABLE attempts (
    job_seq INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    worker TEXT,
    started_at INTEGER,
    finished_at INTEGER,
    error_type TEXT,
    error_message TEXT,
    PRIMARY KEY (job_seq, attempt)
) WITHOUT ROWID;

CREATE INDEX attempts_worker ON attempts (worker, job_seq);
