-- Issue 20: instance liveness. Every server instance registers itself and heartbeats here
-- (on the database clock); work an instance leased (a tool call's hold or settlement, a
-- purchase's settlement, a submission's verification) names it in `owner_instance`, so
-- the others can take that work over once its heartbeat stops, instead of waiting for the
-- lease to run out.
CREATE TABLE server_instances (
    instance_id     TEXT PRIMARY KEY,
    started_at_ms   BIGINT NOT NULL,
    heartbeat_at_ms BIGINT NOT NULL,
    stopped_at_ms   BIGINT
);
ALTER TABLE tool_usage ADD COLUMN owner_instance TEXT;
ALTER TABLE credit_purchases ADD COLUMN owner_instance TEXT;
ALTER TABLE job_submissions ADD COLUMN owner_instance TEXT;

-- Issue 20: shared rate limits (--rate-limit-backend postgres). One GCRA bucket per key:
-- the theoretical arrival time, in microseconds of the database clock. A bucket whose
-- time has passed is full again and is pruned.
CREATE TABLE rate_limit_buckets (
    bucket TEXT PRIMARY KEY,
    tat_us BIGINT NOT NULL
);
CREATE INDEX rate_limit_buckets_tat ON rate_limit_buckets (tat_us);
