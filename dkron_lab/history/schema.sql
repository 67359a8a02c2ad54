-- dkron-lab execution history, schema version 1 (applied by dkron_lab/history/duckdb.py).
--
-- `executions` is the table users query with SQL: one row per FINISHED execution this server
-- applied from the Raft log (running executions live in the Raft state, not here). Times are
-- TIMESTAMPTZ in UTC.
--
-- There is deliberately no PRIMARY KEY and no index (measured on DuckDB 2.0.1, 5M rows):
-- the ART index behind a primary key made the file 6.6x larger (384 MB vs 58 MB) and the process
-- 330 MB fatter, and an index on (job_name, started_at) did not speed up "newest 20 of a job"
-- (a top-N scan with dynamic filters already takes ~5 ms). Idempotency by (job_name, id) is
-- enforced by the writer's anti-join instead; see dkron_lab/history/duckdb.py.

CREATE TABLE executions (
    id           VARCHAR     NOT NULL,
    job_name     VARCHAR     NOT NULL,
    node_name    VARCHAR     NOT NULL,
    "group"      BIGINT      NOT NULL,
    attempt      INTEGER     NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ NOT NULL,
    scheduled_at TIMESTAMPTZ,
    success      BOOLEAN     NOT NULL,
    output       VARCHAR     NOT NULL
);

COMMENT ON TABLE executions IS 'Every finished execution of every job (one row per run on one node); retention is a server setting.';
COMMENT ON COLUMN executions.id IS 'Dkron execution id: <started_at in Unix nanoseconds>-<node_name>.';
COMMENT ON COLUMN executions.job_name IS 'Name of the job that ran.';
COMMENT ON COLUMN executions.node_name IS 'Node that ran it.';
COMMENT ON COLUMN executions."group" IS 'Unix nanoseconds of the trigger; shared by all target nodes and retries of one trigger.';
COMMENT ON COLUMN executions.attempt IS '1-based retry counter within the group.';
COMMENT ON COLUMN executions.started_at IS 'When the node started the command (UTC).';
COMMENT ON COLUMN executions.finished_at IS 'When the command finished (UTC).';
COMMENT ON COLUMN executions.scheduled_at IS 'The instant the run was due; NULL for manual and dependent runs.';
COMMENT ON COLUMN executions.success IS 'True when the command succeeded.';
COMMENT ON COLUMN executions.output IS 'Output excerpt (the tail), after processors.';
