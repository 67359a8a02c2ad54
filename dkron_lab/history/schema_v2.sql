-- dkron-lab execution history, schema version 2: fires deliberately not run.
--
-- One row per span of missed fires that a new leader (or a restarted single server) did not run,
-- by the job's catch-up policy: every fire of the job's schedule from first_at to last_at, count of
-- them, for one reason (policy, window, superseded, limit, expired).

CREATE TABLE skipped_fires (
    job_name    VARCHAR     NOT NULL,
    reason      VARCHAR     NOT NULL,
    first_at    TIMESTAMPTZ NOT NULL,
    last_at     TIMESTAMPTZ NOT NULL,
    count       BIGINT      NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL
);

COMMENT ON TABLE skipped_fires IS 'Fires missed while there was no leader and not run, by the job''s catch-up policy.';
COMMENT ON COLUMN skipped_fires.reason IS 'policy (catchup skip), superseded (once: a later one ran), window (older than --catchup-window), limit, expired.';
COMMENT ON COLUMN skipped_fires.count IS 'How many fires of the schedule lie from first_at to last_at, both included.';
