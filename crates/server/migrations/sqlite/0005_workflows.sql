-- Workflows (skill chains), wallet-scoped workflow sessions and their tool calls; accounts,
-- API keys and budgets (the bearer side); BYO-agent workflow schedules, their leases, runs
-- and idempotent claims. The same SQL on SQLite and PostgreSQL.
-- Times are Unix epoch milliseconds (BIGINT); JSON is stored as TEXT.

CREATE TABLE workflows (
    workflow_id      TEXT PRIMARY KEY,
    slug             TEXT NOT NULL UNIQUE,
    name             TEXT NOT NULL,
    description      TEXT NOT NULL,
    categories       TEXT NOT NULL,
    industry_tags    TEXT NOT NULL,
    -- '|a|b|' lowercase forms of categories / industry tags, for LIKE '%|a|%' filters.
    categories_index TEXT NOT NULL,
    tags_index       TEXT NOT NULL,
    -- Lowercase name, slug and description, for the query filter.
    search_text      TEXT NOT NULL,
    publisher        TEXT NOT NULL,
    visibility       TEXT NOT NULL CHECK (visibility IN ('public', 'private')),
    status           TEXT NOT NULL CHECK (status IN ('draft', 'published')),
    version          BIGINT NOT NULL CHECK (version >= 1),
    graph            TEXT NOT NULL,
    created_at_ms    BIGINT NOT NULL,
    updated_at_ms    BIGINT NOT NULL,
    published_at_ms  BIGINT
);
CREATE INDEX workflows_listing ON workflows (status, visibility, updated_at_ms);

CREATE TABLE workflow_sessions (
    workflow_session_id TEXT PRIMARY KEY,
    workflow_id         TEXT NOT NULL REFERENCES workflows (workflow_id),
    wallet_address      TEXT NOT NULL,
    -- '' when the agent gave no instance_id.
    instance_id         TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('active', 'ended')),
    started_at_ms       BIGINT NOT NULL,
    last_activity_at_ms BIGINT NOT NULL,
    -- Idle limit in force when the session started: it ends by itself once
    -- last_activity_at_ms + idle_timeout_ms has passed.
    idle_timeout_ms     BIGINT NOT NULL CHECK (idle_timeout_ms > 0),
    ended_at_ms         BIGINT,
    end_reason          TEXT
);
-- At most one active session per (wallet, workflow, instance).
CREATE UNIQUE INDEX workflow_sessions_one_active
    ON workflow_sessions (wallet_address, workflow_id, instance_id) WHERE status = 'active';
CREATE INDEX workflow_sessions_wallet ON workflow_sessions (wallet_address, status);

-- Tool calls attributed to a session with _workflow_session_id: the session's results.
CREATE TABLE workflow_session_calls (
    call_id             TEXT PRIMARY KEY,
    workflow_session_id TEXT NOT NULL REFERENCES workflow_sessions (workflow_session_id),
    product_slug        TEXT NOT NULL,
    action_slug         TEXT NOT NULL,
    request_id          TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('succeeded', 'failed')),
    charged_credits     BIGINT NOT NULL CHECK (charged_credits >= 0),
    response            TEXT,
    error               TEXT,
    created_at_ms       BIGINT NOT NULL
);
CREATE INDEX workflow_session_calls_session
    ON workflow_session_calls (workflow_session_id, created_at_ms);

CREATE TABLE accounts (
    account_id    TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);

-- API keys: only the SHA-256 (hex) of the key is kept; the key is shown once.
CREATE TABLE api_keys (
    key_id        TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts (account_id),
    key_hash      TEXT NOT NULL UNIQUE,
    key_prefix    TEXT NOT NULL,
    label         TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT
);

-- Budgets: a spending cap in credits, drawing from a wallet (or, without one, the account).
-- The budget key is kept as its SHA-256 (hex), shown once.
CREATE TABLE budgets (
    budget_id      TEXT PRIMARY KEY,
    account_id     TEXT NOT NULL REFERENCES accounts (account_id),
    name           TEXT NOT NULL,
    cap_credits    BIGINT NOT NULL CHECK (cap_credits >= 0),
    spent_credits  BIGINT NOT NULL DEFAULT 0 CHECK (spent_credits >= 0),
    wallet_address TEXT,
    key_hash       TEXT NOT NULL UNIQUE,
    key_prefix     TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    revoked_at_ms  BIGINT
);

CREATE TABLE workflow_schedules (
    schedule_id          TEXT PRIMARY KEY,
    budget_id            TEXT NOT NULL REFERENCES budgets (budget_id),
    workflow_id          TEXT NOT NULL REFERENCES workflows (workflow_id),
    name                 TEXT NOT NULL,
    prompt               TEXT NOT NULL,
    metadata             TEXT,
    cron                 TEXT,
    interval_seconds     BIGINT,
    time_zone            TEXT NOT NULL,
    status               TEXT NOT NULL CHECK (status IN ('active', 'paused')),
    due_at_ms            BIGINT NOT NULL,
    -- The current lease: visible token, expiry on the database clock, and a fencing epoch
    -- bumped on every grant.
    claim_token          TEXT,
    claim_expires_at_ms  BIGINT,
    claim_lease_seconds  BIGINT,
    claim_epoch          BIGINT NOT NULL DEFAULT 0,
    last_outcome         TEXT,
    last_external_run_id TEXT,
    last_note            TEXT,
    last_advanced_at_ms  BIGINT,
    created_at_ms        BIGINT NOT NULL,
    updated_at_ms        BIGINT NOT NULL,
    CHECK ((cron IS NULL) <> (interval_seconds IS NULL))
);
CREATE INDEX workflow_schedules_due ON workflow_schedules (budget_id, status, due_at_ms);

-- One row per handled occurrence (advance): the run log, and what makes a repeated
-- advance answer already_advanced.
CREATE TABLE workflow_schedule_runs (
    schedule_id     TEXT NOT NULL REFERENCES workflow_schedules (schedule_id),
    due_at_ms       BIGINT NOT NULL,
    claim_token     TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    external_run_id TEXT,
    note            TEXT,
    next_due_at_ms  BIGINT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    PRIMARY KEY (schedule_id, due_at_ms)
);

-- Claim request_ids per budget: a retried claim returns the stored answer.
CREATE TABLE workflow_schedule_claims (
    budget_id     TEXT NOT NULL REFERENCES budgets (budget_id),
    request_id    TEXT NOT NULL,
    response      TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (budget_id, request_id)
);
