-- Jobs board: platform-funded jobs, exclusive reservations with a fencing epoch,
-- submissions with their verification state, and workflows created under a reservation.
-- The same SQL on SQLite and PostgreSQL.

CREATE TABLE jobs (
    job_id               TEXT PRIMARY KEY,
    job_type             TEXT NOT NULL CHECK (job_type IN ('social_share', 'workflow_creation', 'general')),
    title                TEXT NOT NULL,
    public_description   TEXT NOT NULL,
    private_instructions TEXT NOT NULL,
    reward_credits       BIGINT NOT NULL CHECK (reward_credits > 0),
    -- social_share: the AgentPMT URL the tracked link points at, and the one platform.
    target_url           TEXT,
    platform             TEXT,
    max_completions      BIGINT NOT NULL CHECK (max_completions >= 1),
    -- Approved (paid) submissions so far.
    completions          BIGINT NOT NULL DEFAULT 0 CHECK (completions >= 0),
    -- What a rejected submission does to the job: reopen it or close it.
    on_reject            TEXT NOT NULL CHECK (on_reject IN ('reopen', 'close')),
    status               TEXT NOT NULL CHECK (status IN ('open', 'reserved', 'submitted', 'approved', 'rejected')),
    -- Fencing token: bumped on every grant; a reservation is (job_id, epoch).
    reservation_epoch    BIGINT NOT NULL DEFAULT 0,
    reserved_by          TEXT,
    reserved_until_ms    BIGINT,
    created_at_ms        BIGINT NOT NULL,
    updated_at_ms        BIGINT NOT NULL
);
CREATE INDEX jobs_board ON jobs (status, created_at_ms);

CREATE TABLE job_reservations (
    reservation_id        TEXT PRIMARY KEY,
    job_id                TEXT NOT NULL REFERENCES jobs (job_id),
    epoch                 BIGINT NOT NULL,
    wallet_address        TEXT NOT NULL,
    tracking_code         TEXT NOT NULL,
    tracked_url           TEXT,
    -- SHA-256 (hex) of the workflow_creation access token; the token itself is not stored.
    workflow_token_digest TEXT UNIQUE,
    reserved_at_ms        BIGINT NOT NULL,
    expires_at_ms         BIGINT NOT NULL,
    UNIQUE (job_id, epoch)
);

CREATE TABLE job_submissions (
    submission_id        TEXT PRIMARY KEY,
    job_id               TEXT NOT NULL REFERENCES jobs (job_id),
    reservation_id       TEXT NOT NULL UNIQUE REFERENCES job_reservations (reservation_id),
    epoch                BIGINT NOT NULL,
    wallet_address       TEXT NOT NULL,
    proof_text           TEXT NOT NULL,
    -- JSON array of the social_posts items (social_share jobs), '[]' otherwise.
    social_posts         TEXT NOT NULL,
    workflow_id          TEXT,
    status               TEXT NOT NULL CHECK (status IN ('submitted', 'approved', 'rejected')),
    verification_status  TEXT NOT NULL CHECK (verification_status IN
        ('queued', 'running', 'verified', 'rejected', 'transient_error', 'needs_human')),
    verification_method  TEXT,
    verification_reason  TEXT,
    attempts             BIGINT NOT NULL DEFAULT 0,
    next_attempt_at_ms   BIGINT NOT NULL,
    lease_until_ms       BIGINT,
    payout_entry_id      TEXT,
    paid_at_ms           BIGINT,
    created_at_ms        BIGINT NOT NULL,
    updated_at_ms        BIGINT NOT NULL
);
CREATE INDEX job_submissions_work ON job_submissions (status, verification_status, next_attempt_at_ms);
CREATE INDEX job_submissions_wallet ON job_submissions (job_id, wallet_address);

-- Workflows created through the X-Job-Workflow-Token endpoints, by reservation.
CREATE TABLE job_workflows (
    workflow_id    TEXT PRIMARY KEY REFERENCES workflows (workflow_id),
    job_id         TEXT NOT NULL REFERENCES jobs (job_id),
    reservation_id TEXT NOT NULL REFERENCES job_reservations (reservation_id),
    created_at_ms  BIGINT NOT NULL
);
