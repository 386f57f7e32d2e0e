-- The tool marketplace: vendors, products (tools), actions, usage records and credit holds.
-- Times are epoch ms. Flags are 0/1 integers (the same SQL on SQLite and PostgreSQL).

CREATE TABLE vendors (
    vendor_id      TEXT PRIMARY KEY,
    slug           TEXT NOT NULL UNIQUE,
    name           TEXT NOT NULL,
    status         TEXT NOT NULL,                  -- active | inactive
    -- HMAC secret, AES-256-GCM encrypted with the server's secrets key (never in clear).
    secret_sealed  TEXT,
    created_at_ms  BIGINT NOT NULL,
    updated_at_ms  BIGINT NOT NULL
);

CREATE TABLE products (
    product_id     TEXT PRIMARY KEY,               -- 24 hex digits
    slug           TEXT NOT NULL UNIQUE,
    name           TEXT NOT NULL,
    description    TEXT NOT NULL,
    categories     TEXT NOT NULL,                  -- JSON array, as given
    vendor_id      TEXT REFERENCES vendors (vendor_id),
    status         TEXT NOT NULL,                  -- active | inactive
    is_private     BIGINT NOT NULL DEFAULT 0,
    -- Lowercased name and description for the text search.
    search_text    TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    updated_at_ms  BIGINT NOT NULL
);
CREATE INDEX products_listing ON products (status, is_private, slug);

-- Lowercased categories, for the category filter.
CREATE TABLE product_categories (
    product_id     TEXT NOT NULL REFERENCES products (product_id),
    category       TEXT NOT NULL,
    PRIMARY KEY (product_id, category)
);
CREATE INDEX product_categories_category ON product_categories (category);

CREATE TABLE product_actions (
    product_id     TEXT NOT NULL REFERENCES products (product_id),
    slug           TEXT NOT NULL,
    name           TEXT NOT NULL,
    description    TEXT NOT NULL,
    price_credits  BIGINT NOT NULL CHECK (price_credits > 0),
    x402_enabled   BIGINT NOT NULL DEFAULT 0,
    -- The parameter schema as given (JSON Schema or the flat form) and as JSON Schema.
    schema_source  TEXT NOT NULL,
    input_schema   TEXT NOT NULL,
    runner         TEXT NOT NULL,                  -- JSON RunnerSpec
    status         TEXT NOT NULL,
    position       BIGINT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    updated_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (product_id, slug)
);

-- One row per tool call that passed validation and payment checks. Parameters and
-- credentials are never stored.
CREATE TABLE tool_usage (
    usage_id             TEXT PRIMARY KEY,
    product_id           TEXT NOT NULL,
    product_slug         TEXT NOT NULL,
    action_slug          TEXT NOT NULL,
    mode                 TEXT NOT NULL,            -- credits | x402
    wallet_address       TEXT,                     -- credits: the signed wallet
    payer_address        TEXT,                     -- x402: authorization.from
    session_nonce        TEXT,
    request_id           TEXT,
    price_credits        BIGINT NOT NULL,
    charged_credits      BIGINT NOT NULL DEFAULT 0,
    -- running | succeeded | failed | settlement_failed | settlement_pending
    status               TEXT NOT NULL,
    error_code           TEXT,
    error_message        TEXT,
    workflow_session_id  TEXT,
    network              TEXT,
    -- x402: the token, and the payment payload kept to settle or reconcile the payment
    -- without asking the payer to sign again.
    token                TEXT,
    authorization_json   TEXT,
    transaction_hash     TEXT,
    -- A running call is finished (hold released) by the sweeper after this time; a settling
    -- x402 payment is reconciled from chain state after it (the lease of its settler).
    deadline_ms          BIGINT NOT NULL,
    created_at_ms        BIGINT NOT NULL,
    finished_at_ms       BIGINT
);
CREATE INDEX tool_usage_product ON tool_usage (product_id, created_at_ms);
CREATE INDEX tool_usage_wallet ON tool_usage (wallet_address, created_at_ms);
CREATE INDEX tool_usage_open ON tool_usage (status, deadline_ms);
CREATE INDEX tool_usage_workflow_session ON tool_usage (workflow_session_id);

-- Two-phase charges: a hold is a ledger debit (entry `hold:<usage>`); it is posted (kept)
-- when the tool succeeds, or released (entry `release:<usage>`, the same amount back).
CREATE TABLE credit_holds (
    usage_id        TEXT PRIMARY KEY,
    wallet_address  TEXT NOT NULL,
    amount_credits  BIGINT NOT NULL CHECK (amount_credits > 0),
    status          TEXT NOT NULL,                 -- pending | posted | released
    created_at_ms   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL
);
