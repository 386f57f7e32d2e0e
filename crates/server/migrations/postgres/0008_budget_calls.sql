-- Budget-paid tool calls (the MCP endpoint): a usage record names the API key and the budget
-- that paid for it, and a hold remembers the budget whose cap it reserved, so voiding the
-- hold gives the cap back. A hold on an account-funded budget has `wallet_address`
-- 'account:<account id>' and no ledger entry. The same SQL on SQLite and PostgreSQL.

ALTER TABLE tool_usage ADD COLUMN api_key_id TEXT;
ALTER TABLE tool_usage ADD COLUMN budget_id TEXT;
ALTER TABLE credit_holds ADD COLUMN budget_id TEXT;

CREATE INDEX tool_usage_budget ON tool_usage (budget_id, created_at_ms);
CREATE INDEX tool_usage_api_key ON tool_usage (api_key_id, created_at_ms);
