-- Per-(agent, version, window) partial aggregates, one row per flush of a worker's window.
--
-- A worker aggregates the Kafka partitions it owns (map-side) and writes, per window and
-- partition, the counts and sums of schemas/window_stats.py. Every column except the
-- identity is a count or a sum, so any query adds the rows of a window together:
-- partials of several partitions, and the correction rows (`late`) that count events
-- which arrived after their window was emitted.
--
-- `offset_from` is the offset of the first event a row counts and `offset_until` is one past
-- its last; after a crash the worker reads them back and counts only the events of a window
-- past them, so every stored span is counted exactly once (see streams/aggregate.py).
-- `source` (topic/partition@offset_from) identifies a row: a re-emission after a crash
-- carries the same identity, and ReplacingMergeTree folds a copy a rebalance race might
-- still write.
CREATE TABLE IF NOT EXISTS coalmine.version_stats
(
    agent            LowCardinality(String),
    version          LowCardinality(String),
    window_start     DateTime('UTC') CODEC(Delta, ZSTD(1)),
    window_seconds   UInt32,
    source           String CODEC(ZSTD(1)),
    kafka_topic      LowCardinality(String),
    kafka_partition  UInt32,
    offset_from      UInt64,
    offset_until     UInt64,
    late             Bool,
    requests         UInt64,
    errors           UInt64,
    tasks_attempted  UInt64,
    tasks_completed  UInt64,
    tool_calls       UInt64,
    tool_errors      UInt64,
    llm_calls        UInt64,
    guardrail_blocks UInt64,
    input_tokens     UInt64,
    output_tokens    UInt64,
    cost_count       UInt64,
    cost_sum         Float64,
    cost_sumsq       Float64,
    log_cost_sum     Float64,
    log_cost_sumsq   Float64,
    quality_count    UInt64,
    quality_sum      Float64,
    quality_sumsq    Float64,
    latency_sum_ms   Float64,
    latency_buckets  Array(UInt64) CODEC(ZSTD(3)),
    emitted_at       DateTime64(3, 'UTC') DEFAULT now64(3),
    -- A restarting worker reads back the rows past its committed offsets (streams/clickhouse.py).
    INDEX offset_until_minmax offset_until TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (agent, version, window_seconds, window_start, source, offset_from)
-- An insert the worker retries after a failure that happened after the rows were written
-- (in a materialized view of 0005, say) is the same block again: it is dropped.
SETTINGS non_replicated_deduplication_window = 1000;
