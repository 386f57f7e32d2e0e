-- Money safety: one claim per on-chain payment, where a settlement search starts, and the
-- output of a paid tool call whose settlement is still open.

-- One on-chain transfer pays for one thing, ever: every transfer log the server counts as a
-- payment (a purchase of either method, a direct x402 tool payment, a facilitator
-- settlement) is claimed here, keyed by the log itself, in the transaction that grants what
-- it pays for.
CREATE TABLE payment_claims (
    chain_id           BIGINT NOT NULL,
    transaction_hash   TEXT NOT NULL,            -- 0x-prefixed, lowercase
    log_index          BIGINT NOT NULL,          -- the Transfer log's index in its block
    kind               TEXT NOT NULL,            -- purchase | tool_payment | facilitator
    holder_id          TEXT NOT NULL,            -- purchase_id, usage_id, ...
    asset              TEXT NOT NULL,            -- lowercase token address
    payer_address      TEXT NOT NULL,
    pay_to             TEXT NOT NULL,
    amount_base_units  TEXT NOT NULL,
    block_number       BIGINT NOT NULL,
    confirmations      BIGINT NOT NULL,          -- depth when it was counted
    created_at_ms      BIGINT NOT NULL,
    PRIMARY KEY (chain_id, transaction_hash, log_index)
);
CREATE UNIQUE INDEX payment_claims_holder ON payment_claims (kind, holder_id);

-- The block an x402 authorization was seen unused at (its use is searched from there).
ALTER TABLE credit_purchases ADD COLUMN search_from_block BIGINT;
ALTER TABLE tool_usage ADD COLUMN search_from_block BIGINT;
-- A paid tool call answered while its settlement was still open keeps its output here until
-- the settlement is final, so the payer can fetch it by repeating the request.
ALTER TABLE tool_usage ADD COLUMN response_json TEXT;

-- Payments counted before this table existed are claimed now, with log index -1 ("which
-- Transfer log of the transaction is unknown"): the payment audit accepts any Transfer of
-- the exact amount from the payer to payTo in that transaction, and a legacy claim claims
-- every transfer of its transaction. A second purchase credited for the same transaction (a
-- double credit of the kind this table prevents) gets no claim, and the audit lists it.
INSERT INTO payment_claims (chain_id, transaction_hash, log_index, kind, holder_id, asset,
    payer_address, pay_to, amount_base_units, block_number, confirmations, created_at_ms)
SELECT chain_id, LOWER(transaction_hash), -1, 'purchase', purchase_id, LOWER(asset),
    LOWER(payer_address), LOWER(pay_to), amount_base_units, 0, 0, updated_at_ms
FROM credit_purchases
WHERE status = 'settled' AND transaction_hash IS NOT NULL
ORDER BY created_at_ms
ON CONFLICT DO NOTHING;

INSERT INTO payment_claims (chain_id, transaction_hash, log_index, kind, holder_id, asset,
    payer_address, pay_to, amount_base_units, block_number, confirmations, created_at_ms)
SELECT CAST(substr(network, 8) AS INTEGER), LOWER(transaction_hash), -1, 'tool_payment', usage_id,
    LOWER(json_extract(authorization_json, '$.accepted.asset')),
    LOWER(json_extract(authorization_json, '$.payload.authorization.from')),
    LOWER(json_extract(authorization_json, '$.accepted.payTo')),
    json_extract(authorization_json, '$.payload.authorization.value'), 0, 0,
    COALESCE(finished_at_ms, created_at_ms)
FROM tool_usage
WHERE mode = 'x402' AND status = 'succeeded' AND transaction_hash IS NOT NULL
    AND authorization_json IS NOT NULL AND network LIKE 'eip155:%'
ORDER BY created_at_ms
ON CONFLICT DO NOTHING;
