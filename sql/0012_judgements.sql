-- The judge's word on each compared window of a canary deployment (topic
-- coalmine.judgements): one row per judgement, with every metric's evidence in the Nested
-- column `metrics` (parallel arrays: metrics.metric[i] goes with metrics.e_value[i]).
-- One row per metric and judgement:
--
--   SELECT time, verdict, m.metric, m.e_value, m.threshold, m.effect
--   FROM coalmine.judgements ARRAY JOIN metrics AS m
--   WHERE agent = 'support-bot' AND rollout_id = '...'
--   ORDER BY time
--
-- Bounds that are unbounded (no data yet) and effects without data are NULL. `parameters` is
-- the judge's configuration (alpha_rollback, alpha_alert, horizon_s...), `judgement` the
-- whole event as JSON.
--
-- An id names one judgement (the detector makes it deterministic): the worker stores the first
-- record of each (agent, id) and skips any later one, so redelivery, a restart or a detector
-- re-emitting after its own restart adds no row; ReplacingMergeTree on (agent, id) folds a
-- copy a rebalance race might still slip in.
CREATE TABLE IF NOT EXISTS coalmine.judgements
(
    agent             LowCardinality(String),
    id                String,
    time              DateTime64(3, 'UTC'),
    rollout_id        String,
    generation        UInt64,
    stable_version    String,
    canary_version    String,
    window_end        DateTime64(3, 'UTC'),
    windows_compared  UInt64,
    windows_unpaired  UInt64,
    verdict           LowCardinality(String),
    explanation       String,
    detector          LowCardinality(String),
    parameters        Map(String, Float64),
    metrics Nested
    (
        metric             LowCardinality(String),
        verdict            LowCardinality(String),
        estimate_baseline  Float64,
        estimate_canary    Float64,
        effect             Nullable(Float64),
        e_value            Float64,
        cs_lower           Nullable(Float64),
        cs_upper           Nullable(Float64),
        n_baseline         UInt64,
        n_canary           UInt64,
        threshold          Float64,
        tolerance          Nullable(Float64),
        explanation        String
    ),
    judgement         String CODEC(ZSTD(3)),
    kafka_offset      UInt64,
    stored_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (agent, id);
