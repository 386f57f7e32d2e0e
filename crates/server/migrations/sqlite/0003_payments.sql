-- Credit purchases (x402 authorizations and on-chain transfers). Times are epoch ms.

-- One row per purchase attempt that got as far as a verified payment.
CREATE TABLE credit_purchases (
    purchase_id        TEXT PRIMARY KEY,
    wallet_address     TEXT NOT NULL,
    -- Idempotency key chosen by the client (unique per credited wallet).
    request_id         TEXT,
    -- SHA-256 of the canonical request body: same key + different body is refused.
    fingerprint        TEXT NOT NULL,
    method             TEXT NOT NULL,            -- x402 | transfer
    settlement         TEXT NOT NULL,            -- evm | facilitator | dev
    chain_id           BIGINT NOT NULL,
    token              TEXT NOT NULL,
    asset              TEXT NOT NULL,            -- lowercase token address
    pay_to             TEXT NOT NULL,
    payer_address      TEXT NOT NULL,
    credits            BIGINT NOT NULL CHECK (credits > 0),
    amount_base_units  TEXT NOT NULL,
    -- x402: the decoded authorization and signature (JSON), kept to settle or reconcile
    -- without asking the payer to sign again.
    authorization_json TEXT,
    auth_nonce         TEXT,
    transaction_hash   TEXT,
    status             TEXT NOT NULL,            -- pending | broadcast | settled | failed
    -- While a request is settling this purchase, other requests leave it alone.
    lease_until_ms     BIGINT NOT NULL DEFAULT 0,
    error_reason       TEXT,
    error_message      TEXT,
    email              TEXT,
    created_at_ms      BIGINT NOT NULL,
    updated_at_ms      BIGINT NOT NULL
);
CREATE UNIQUE INDEX credit_purchases_request ON credit_purchases (wallet_address, request_id)
    WHERE request_id IS NOT NULL;
CREATE INDEX credit_purchases_open ON credit_purchases (status, lease_until_ms);

-- An EIP-3009 authorization (chain, asset, from, nonce) can pay for one purchase, ever.
-- A purchase whose settlement definitely failed gives the authorization back.
CREATE TABLE payment_authorizations (
    chain_id       BIGINT NOT NULL,
    asset          TEXT NOT NULL,
    payer_address  TEXT NOT NULL,
    auth_nonce     TEXT NOT NULL,
    purchase_id    TEXT NOT NULL,
    status         TEXT NOT NULL,                -- active | failed | settled
    updated_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (chain_id, asset, payer_address, auth_nonce)
);

-- An on-chain transfer pays for one purchase, ever.
CREATE TABLE payment_transfers (
    chain_id          BIGINT NOT NULL,
    transaction_hash  TEXT NOT NULL,
    purchase_id       TEXT NOT NULL,
    PRIMARY KEY (chain_id, transaction_hash)
);
