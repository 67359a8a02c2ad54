-- dkron-lab history, schema version 4: what each run used (resource accounting).
--
-- Three nullable columns on `executions`: rows written before this version, runs of executors
-- that start no process (http) and runs too short to be measured keep NULL. How the figures are
-- made and how precise they are: docs/monitoring.md ("Resource use per run").

ALTER TABLE executions ADD COLUMN cpu_user_seconds DOUBLE;
ALTER TABLE executions ADD COLUMN cpu_system_seconds DOUBLE;
ALTER TABLE executions ADD COLUMN max_rss_bytes BIGINT;

COMMENT ON COLUMN executions.cpu_user_seconds IS 'CPU seconds in user mode of the run''s processes (the command and every process under it); NULL when not measured.';
COMMENT ON COLUMN executions.cpu_system_seconds IS 'CPU seconds in kernel mode of the run''s processes; NULL when not measured.';
COMMENT ON COLUMN executions.max_rss_bytes IS 'Peak resident memory of the run''s processes together, in bytes (sampled); NULL when not measured.';
