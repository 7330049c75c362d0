-- Jobs are partitioned by final state (LIST), then by month of finished_at (RANGE), so that
-- retention drops whole monthly partitions per state instead of deleting rows. The monthly
-- partitions are not made here: the store creates them ahead (on migrate and prune) and on
-- demand when a batch brings a month that has none. Attempts are partitioned the same way,
-- by their job's state and finished_at, so a job's attempts go with it.
CREATE SCHEMA IF NOT EXISTS {{schema}};

CREATE SEQUENCE {{schema}}.jobs_seq;

CREATE TABLE {{schema}}.jobs (
    seq bigint NOT NULL DEFAULT nextval('{{schema}}.jobs_seq'),
    id text NOT NULL,
    queue text NOT NULL,
    attempts integer NOT NULL,
    state text NOT NULL,
    finished_at timestamptz NOT NULL,
    task text NOT NULL,
    arguments text,
    result text,
    error_type text,
    error_message text,
    traceback text,
    truncated integer NOT NULL DEFAULT 0,
    priority integer NOT NULL DEFAULT 0,
    group_key text,
    parent_queue text,
    parent_id text,
    flow text,
    schedule text,
    enqueued_at timestamptz,
    scheduled_for timestamptz,
    started_at timestamptz,
    wait_ms double precision,
    run_ms double precision,
    worker text,
    -- Idempotency key; a partitioned table's key must hold the partition keys (state,
    -- finished_at). id first, so a lookup by id alone uses it too.
    PRIMARY KEY (id, queue, attempts, state, finished_at)
) PARTITION BY LIST (state);

CREATE TABLE {{schema}}.jobs_completed PARTITION OF {{schema}}.jobs FOR VALUES IN ('completed') PARTITION BY RANGE (finished_at);
CREATE TABLE {{schema}}.jobs_failed PARTITION OF {{schema}}.jobs FOR VALUES IN ('failed') PARTITION BY RANGE (finished_at);
CREATE TABLE {{schema}}.jobs_cancelled PARTITION OF {{schema}}.jobs FOR VALUES IN ('cancelled') PARTITION BY RANGE (finished_at);
CREATE TABLE {{schema}}.jobs_expired PARTITION OF {{schema}}.jobs FOR VALUES IN ('expired') PARTITION BY RANGE (finished_at);
CREATE TABLE {{schema}}.jobs_removed PARTITION OF {{schema}}.jobs FOR VALUES IN ('removed') PARTITION BY RANGE (finished_at);

CREATE INDEX jobs_finished ON {{schema}}.jobs (finished_at, seq);
-- INCLUDE makes the stats of a task an index-only scan.
CREATE INDEX jobs_task ON {{schema}}.jobs (task, finished_at, seq) INCLUDE (queue, state, wait_ms, run_ms);
CREATE INDEX jobs_queue ON {{schema}}.jobs (queue, finished_at, seq);
CREATE INDEX jobs_group ON {{schema}}.jobs (group_key, finished_at, seq) WHERE group_key IS NOT NULL;
CREATE INDEX jobs_worker ON {{schema}}.jobs (worker, finished_at, seq);

CREATE TABLE {{schema}}.attempts (
    queue text NOT NULL,
    job_id text NOT NULL,
    job_attempts integer NOT NULL,
    job_state text NOT NULL,
    job_finished_at timestamptz NOT NULL,
    attempt integer NOT NULL,
    outcome text NOT NULL,
    worker text,
    started_at timestamptz,
    finished_at timestamptz,
    error_type text,
    error_message text,
    PRIMARY KEY (job_id, queue, job_attempts, job_state, job_finished_at, attempt)
) PARTITION BY LIST (job_state);

CREATE TABLE {{schema}}.attempts_completed PARTITION OF {{schema}}.attempts FOR VALUES IN ('completed') PARTITION BY RANGE (job_finished_at);
CREATE TABLE {{schema}}.attempts_failed PARTITION OF {{schema}}.attempts FOR VALUES IN ('failed') PARTITION BY RANGE (job_finished_at);
CREATE TABLE {{schema}}.attempts_cancelled PARTITION OF {{schema}}.attempts FOR VALUES IN ('cancelled') PARTITION BY RANGE (job_finished_at);
CREATE TABLE {{schema}}.attempts_expired PARTITION OF {{schema}}.attempts FOR VALUES IN ('expired') PARTITION BY RANGE (job_finished_at);
CREATE TABLE {{schema}}.attempts_removed PARTITION OF {{schema}}.attempts FOR VALUES IN ('removed') PARTITION BY RANGE (job_finished_at);

CREATE INDEX attempts_worker ON {{schema}}.attempts (worker, job_finished_at);
