-- dkron-lab history, schema version 3: the audit trail of the HTTP API.
--
-- One row per change asked of this server's public API (every request other than GET, HEAD
-- and OPTIONS, allowed or refused), written when it was answered. Local to the server that
-- answered: each server keeps the changes it was asked for (docs/security.md). The time column
-- is answered_at, not at: AT is a keyword of DuckDB's SQL, so `SELECT at` would not parse.

CREATE TABLE audit (
    answered_at TIMESTAMPTZ NOT NULL,
    actor       VARCHAR     NOT NULL,
    role        VARCHAR,
    remote      VARCHAR     NOT NULL,
    method      VARCHAR     NOT NULL,
    path        VARCHAR     NOT NULL,
    status      INTEGER     NOT NULL
);

COMMENT ON TABLE audit IS 'Every change asked of this server''s API (not GET/HEAD), who asked and how it was answered.';
COMMENT ON COLUMN audit.answered_at IS 'When the answer was sent (UTC).';
COMMENT ON COLUMN audit.actor IS 'The name of the token used (admin for --api-token), or anonymous (no valid token, or --no-auth).';
COMMENT ON COLUMN audit.role IS 'The role of that token (admin, operator, viewer); NULL when no valid token was sent.';
COMMENT ON COLUMN audit.remote IS 'The address the request came from.';
COMMENT ON COLUMN audit.status IS 'The HTTP status of the answer (401/403: refused).';
