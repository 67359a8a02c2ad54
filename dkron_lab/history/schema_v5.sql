-- dkron-lab history, schema version 5: which backfill ran a run.
--
-- One nullable column on `executions`: the id of the backfill (POST /v1/jobs/<job>/backfill)
-- that ran the row's run; NULL for live fires, manual and dependent runs, and rows written
-- before this version. docs/jobs.md ("Backfill").

ALTER TABLE executions ADD COLUMN backfill VARCHAR;

COMMENT ON COLUMN executions.backfill IS 'The id of the backfill that ran this run (its scheduled_at is the instant it made up for); NULL for a live fire, a manual or a dependent run.';
