-- Operators close a help ticket once it is handled, and may reopen it: open while
-- closed_at_ms is NULL.
ALTER TABLE agent_help_tickets ADD COLUMN closed_at_ms BIGINT;
