-- AgentAddress issuance, its shared rate limit, and agent-help tickets.
-- Times are Unix epoch milliseconds (BIGINT) on both backends.

-- Only the public address of each issued AgentAddress: never its key or mnemonic.
CREATE TABLE agent_addresses (
    address       TEXT PRIMARY KEY,
    source        TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX agent_addresses_created ON agent_addresses (created_at_ms);

-- One fixed window per source address, advanced by a single upsert on the database clock
-- (shared by every server instance on this database).
CREATE TABLE agentaddress_rate_limits (
    source          TEXT PRIMARY KEY,
    window_start_ms BIGINT NOT NULL,
    hits            BIGINT NOT NULL
);
CREATE INDEX agentaddress_rate_limits_window ON agentaddress_rate_limits (window_start_ms);

-- Questions and failing requests posted by agents, for operators.
CREATE TABLE agent_help_tickets (
    ticket_id     TEXT PRIMARY KEY,
    message       TEXT NOT NULL,
    request_id    TEXT,
    error_code    TEXT,
    context       TEXT,
    source        TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX agent_help_tickets_created ON agent_help_tickets (created_at_ms);
