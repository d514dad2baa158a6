-- Alerts (topic coalmine.alerts): one row per alert, raised by the detector on a transition
-- (a canary turning worse, a version drifting from its own history, a cost spike, a failed
-- gate, a judge's horizon passed). `message` is the detector's line; the test behind it is in
-- `statistic`, `threshold`, `n_baseline`, `n_observed` (NULL when the alert has no test).
-- `baseline_version` is '' when a version was compared with its own history, `rollout_id`
-- '' and `generation` NULL when the alert is about no deployment (drift, cost spikes).
--
--   SELECT time, agent, version, kind, severity, message
--   FROM coalmine.alerts WHERE time > now() - INTERVAL 1 DAY ORDER BY time
--
-- The id is the idempotency key (deterministic: the same transition raised again keeps it):
-- the worker stores the first record of each (agent, id) and skips later ones, so redelivery
-- and restarts add no row; ReplacingMergeTree on (agent, id) folds a copy a rebalance race
-- might still slip in. The worker posts each alert it stores to the webhook, if one is set.
CREATE TABLE IF NOT EXISTS coalmine.alerts
(
    agent             LowCardinality(String),
    id                String,
    time              DateTime64(3, 'UTC'),
    version           String,
    baseline_version  String,
    rollout_id        String,
    generation        Nullable(UInt64),
    metric            LowCardinality(String),
    kind              LowCardinality(String),
    severity          LowCardinality(String),
    observed          Nullable(Float64),
    baseline          Nullable(Float64),
    effect            Nullable(Float64),
    statistic         Nullable(Float64),
    threshold         Nullable(Float64),
    n_baseline        Nullable(UInt64),
    n_observed        Nullable(UInt64),
    detector          LowCardinality(String),
    parameters        Map(String, Float64),
    message           String,
    alert             String CODEC(ZSTD(3)),
    kafka_offset      UInt64,
    stored_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (agent, id);
