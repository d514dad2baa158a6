-- One row per accepted trace event (a span), stored once per event_id.
--
-- Writers check event_id before inserting (see streams/clickhouse.py), so re-delivered events
-- do not become rows; ReplacingMergeTree on a key that ends in event_id is the backstop that
-- folds any duplicate a concurrent writer might still slip in during a rebalance.
-- Retention: the TTL is set from COALMINE_SPANS_TTL_DAYS by `coalmine migrate`.
CREATE TABLE IF NOT EXISTS coalmine.spans
(
    event_id        UUID,
    trace_id        String CODEC(ZSTD(1)),
    span_id         String CODEC(ZSTD(1)),
    parent_span_id  String CODEC(ZSTD(1)),
    agent           LowCardinality(String),
    version         LowCardinality(String),
    environment     LowCardinality(String),
    tenant          LowCardinality(String),
    kind            Enum8('request' = 1, 'llm' = 2, 'tool' = 3, 'retrieval' = 4,
                          'guardrail' = 5, 'eval' = 6, 'custom' = 7),
    name            LowCardinality(String),
    start_time      DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    end_time        DateTime64(6, 'UTC') CODEC(Delta, ZSTD(1)),
    duration_ms     Float64 CODEC(ZSTD(1)),
    status          Enum8('ok' = 1, 'error' = 2),
    error_type      LowCardinality(String),
    error_message   String CODEC(ZSTD(3)),
    provider        LowCardinality(String),
    model           LowCardinality(String),
    input_tokens    UInt32 CODEC(T64, ZSTD(1)),
    output_tokens   UInt32 CODEC(T64, ZSTD(1)),
    cost_usd        Float64 CODEC(ZSTD(1)),
    cost_source     Enum8('reported' = 1, 'price_table' = 2, 'unpriced' = 3),
    tool_name       LowCardinality(String),
    task_completed  Nullable(Bool),
    quality_score   Nullable(Float32),
    attributes      Map(LowCardinality(String), String) CODEC(ZSTD(3)),
    kafka_partition UInt32,
    kafka_offset    UInt64 CODEC(Delta, ZSTD(1)),
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1)),
    INDEX event_id_bloom event_id TYPE bloom_filter(0.001) GRANULARITY 4,
    INDEX trace_id_bloom trace_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(start_time)
ORDER BY (agent, version, kind, start_time, event_id);
