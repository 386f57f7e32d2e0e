-- Wallet sessions, replay records and the credit ledger (PostgreSQL).
-- Times are Unix epoch milliseconds (BIGINT) on both backends.

CREATE TABLE auth_sessions (
    nonce          TEXT PRIMARY KEY,
    wallet_address TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    expires_at_ms  BIGINT NOT NULL
);
CREATE INDEX auth_sessions_expiry ON auth_sessions (expires_at_ms);

-- One row per accepted signed request: (session, request_id) can be used once.
-- Rows are pruned only together with their (expired) session.
CREATE TABLE request_replays (
    session_nonce  TEXT NOT NULL,
    request_id     TEXT NOT NULL,
    wallet_address TEXT NOT NULL,
    action         TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (session_nonce, request_id)
);

CREATE TABLE wallets (
    address         TEXT PRIMARY KEY,
    balance_credits BIGINT NOT NULL DEFAULT 0 CHECK (balance_credits >= 0),
    created_at_ms   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL
);

-- Append-only: every change of a balance is one entry; the balance equals the sum.
CREATE TABLE ledger_entries (
    entry_id        TEXT PRIMARY KEY,
    wallet_address  TEXT NOT NULL REFERENCES wallets (address),
    amount_credits  BIGINT NOT NULL CHECK (amount_credits <> 0),
    kind            TEXT NOT NULL,
    reference       TEXT,
    reason          TEXT,
    fingerprint     TEXT,
    balance_after   BIGINT NOT NULL CHECK (balance_after >= 0),
    created_at_ms   BIGINT NOT NULL
);
CREATE INDEX ledger_entries_wallet ON ledger_entries (wallet_address, created_at_ms);

CREATE FUNCTION ledger_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_entries is append-only';
END;
$$;
CREATE TRIGGER ledger_entries_no_change BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION ledger_entries_append_only();
