-- Rollback requests (topic coalmine.rollbacks): one row per RollbackCommand, from the
-- detector or anyone. Whether the controller applied it is in coalmine.deployment_events (the
-- row whose command_id is this id); `to_version` is '' for "the current stable version",
-- `alert_ids` the alerts (coalmine.alerts.id) behind it.
--
-- The id is the idempotency key: the worker stores the first record of each (agent, id) and
-- skips later ones, so redelivery and restarts add no row; ReplacingMergeTree on (agent, id)
-- folds a copy a rebalance race might still slip in.
CREATE TABLE IF NOT EXISTS coalmine.rollbacks
(
    agent         LowCardinality(String),
    id            String,
    time          DateTime64(3, 'UTC'),
    from_version  String,
    to_version    String,
    reason        String,
    alert_ids     Array(String),
    issued_by     String,
    kafka_offset  UInt64,
    stored_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (agent, id);
