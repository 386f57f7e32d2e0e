-- Issue 20: a replayed signed request with the identical body learns what became of the
-- original. The body's canonical hash tells an identical copy from another body under the
-- same request_id; the outcome pointer (written in the transaction of the effect) names
-- what the original made: 'usage' (a tool call's usage_id) or 'reservation' (a job
-- reservation_id). Rows of older servers have neither: their replays get the plain 409.
ALTER TABLE request_replays ADD COLUMN body_sha256 TEXT;
ALTER TABLE request_replays ADD COLUMN outcome_kind TEXT;
ALTER TABLE request_replays ADD COLUMN outcome_id TEXT;
