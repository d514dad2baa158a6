-- Per-minute and per-hour rollups of coalmine.version_stats, kept up to date by ClickHouse.
--
-- Every base row is added, on insert, to the row of its (agent, version, minute) in
-- `version_stats_1m` and of its (agent, version, hour) in `version_stats_1h` by a
-- materialized view; a row belongs to the minute and hour holding its `window_start`. Both
-- tables keep every measure of the base table (all counts and sums), so anything computed
-- from the base rows of a period can be computed from the rollup rows at that resolution,
-- over weeks, reading 12x (minute) or 720x (hour) fewer rows with 5 s windows, times the
-- number of Kafka partitions, once merged.
--
-- Reading them: rows of a key merge in the background, not on insert, so a query always
-- aggregates: `sum(requests)`, and `sumForEachMerge(latency_buckets)` for the histogram
-- (stored as the state of `sumForEach`, since a plain Array column is not summed by merges).
-- coalmine_latency_quantile_ms (0006) turns a merged histogram into a latency quantile.
--
-- Layout: ordered by (agent, version, time) like the base table, since dashboards pick an
-- agent (and versions) and read a time range. The minute rollup keeps 35 days (a month of
-- dashboards at minute resolution, plus margin) and is partitioned by day, so that expired
-- days are dropped whole rather than rewritten. The hourly rollup keeps everything: one row
-- per agent, version and hour is under 9,000 rows a year per version, and the base table has
-- no TTL either; it is partitioned by month.
--
-- How exact they are. A materialized view is an insert trigger, not a transaction: the base
-- part is written first, then each rollup's, so a crash in between leaves a rollup short of
-- that base row (the base row is stored, so the worker does not emit it again), and a failed
-- rollup write fails the insert after the base part landed. The worker then retries the same
-- rows: with `non_replicated_deduplication_window` each rollup drops what it already received
-- from an identical insert (ClickHouse derives the identity of a view's block from the
-- inserted base block), so a retry is counted once. A duplicate written by a rebalance
-- race, which the base table's ReplacingMergeTree folds later, is counted in the rollups
-- for good. `version_summary` (0006) reads the base table and is exact; the rollups are for
-- dashboards and long ranges.
-- Only rows inserted after this migration are rolled up; to backfill, stop the writers and
-- run each view's SELECT as `INSERT INTO <rollup> SELECT ...`.

CREATE TABLE IF NOT EXISTS coalmine.version_stats_1m
(
    agent            LowCardinality(String),
    version          LowCardinality(String),
    minute           DateTime('UTC') CODEC(Delta, ZSTD(1)),
    requests         SimpleAggregateFunction(sum, UInt64),
    errors           SimpleAggregateFunction(sum, UInt64),
    tasks_attempted  SimpleAggregateFunction(sum, UInt64),
    tasks_completed  SimpleAggregateFunction(sum, UInt64),
    tool_calls       SimpleAggregateFunction(sum, UInt64),
    tool_errors      SimpleAggregateFunction(sum, UInt64),
    llm_calls        SimpleAggregateFunction(sum, UInt64),
    guardrail_blocks SimpleAggregateFunction(sum, UInt64),
    input_tokens     SimpleAggregateFunction(sum, UInt64),
    output_tokens    SimpleAggregateFunction(sum, UInt64),
    cost_count       SimpleAggregateFunction(sum, UInt64),
    cost_sum         SimpleAggregateFunction(sum, Float64),
    cost_sumsq       SimpleAggregateFunction(sum, Float64),
    log_cost_sum     SimpleAggregateFunction(sum, Float64),
    log_cost_sumsq   SimpleAggregateFunction(sum, Float64),
    quality_count    SimpleAggregateFunction(sum, UInt64),
    quality_sum      SimpleAggregateFunction(sum, Float64),
    quality_sumsq    SimpleAggregateFunction(sum, Float64),
    latency_sum_ms   SimpleAggregateFunction(sum, Float64),
    latency_buckets  AggregateFunction(sumForEach, Array(UInt64)) CODEC(ZSTD(3))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMMDD(minute)
ORDER BY (agent, version, minute)
TTL minute + INTERVAL 35 DAY
SETTINGS ttl_only_drop_parts = 1, non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS coalmine.version_stats_1m_mv
TO coalmine.version_stats_1m
AS SELECT
    agent,
    version,
    toStartOfMinute(window_start) AS minute,
    sum(requests)                 AS requests,
    sum(errors)                   AS errors,
    sum(tasks_attempted)          AS tasks_attempted,
    sum(tasks_completed)          AS tasks_completed,
    sum(tool_calls)               AS tool_calls,
    sum(tool_errors)              AS tool_errors,
    sum(llm_calls)                AS llm_calls,
    sum(guardrail_blocks)         AS guardrail_blocks,
    sum(input_tokens)             AS input_tokens,
    sum(output_tokens)            AS output_tokens,
    sum(cost_count)               AS cost_count,
    sum(cost_sum)                 AS cost_sum,
    sum(cost_sumsq)               AS cost_sumsq,
    sum(log_cost_sum)             AS log_cost_sum,
    sum(log_cost_sumsq)           AS log_cost_sumsq,
    sum(quality_count)            AS quality_count,
    sum(quality_sum)              AS quality_sum,
    sum(quality_sumsq)            AS quality_sumsq,
    sum(latency_sum_ms)           AS latency_sum_ms,
    sumForEachState(latency_buckets) AS latency_buckets
FROM coalmine.version_stats
GROUP BY agent, version, minute;

CREATE TABLE IF NOT EXISTS coalmine.version_stats_1h
(
    agent            LowCardinality(String),
    version          LowCardinality(String),
    hour             DateTime('UTC') CODEC(Delta, ZSTD(1)),
    requests         SimpleAggregateFunction(sum, UInt64),
    errors           SimpleAggregateFunction(sum, UInt64),
    tasks_attempted  SimpleAggregateFunction(sum, UInt64),
    tasks_completed  SimpleAggregateFunction(sum, UInt64),
    tool_calls       SimpleAggregateFunction(sum, UInt64),
    tool_errors      SimpleAggregateFunction(sum, UInt64),
    llm_calls        SimpleAggregateFunction(sum, UInt64),
    guardrail_blocks SimpleAggregateFunction(sum, UInt64),
    input_tokens     SimpleAggregateFunction(sum, UInt64),
    output_tokens    SimpleAggregateFunction(sum, UInt64),
    cost_count       SimpleAggregateFunction(sum, UInt64),
    cost_sum         SimpleAggregateFunction(sum, Float64),
    cost_sumsq       SimpleAggregateFunction(sum, Float64),
    log_cost_sum     SimpleAggregateFunction(sum, Float64),
    log_cost_sumsq   SimpleAggregateFunction(sum, Float64),
    quality_count    SimpleAggregateFunction(sum, UInt64),
    quality_sum      SimpleAggregateFunction(sum, Float64),
    quality_sumsq    SimpleAggregateFunction(sum, Float64),
    latency_sum_ms   SimpleAggregateFunction(sum, Float64),
    latency_buckets  AggregateFunction(sumForEach, Array(UInt64)) CODEC(ZSTD(3))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (agent, version, hour)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS coalmine.version_stats_1h_mv
TO coalmine.version_stats_1h
AS SELECT
    agent,
    version,
    toStartOfHour(window_start) AS hour,
    sum(requests)               AS requests,
    sum(errors)                 AS errors,
    sum(tasks_attempted)        AS tasks_attempted,
    sum(tasks_completed)        AS tasks_completed,
    sum(tool_calls)             AS tool_calls,
    sum(tool_errors)            AS tool_errors,
    sum(llm_calls)              AS llm_calls,
    sum(guardrail_blocks)       AS guardrail_blocks,
    sum(input_tokens)           AS input_tokens,
    sum(output_tokens)          AS output_tokens,
    sum(cost_count)             AS cost_count,
    sum(cost_sum)               AS cost_sum,
    sum(cost_sumsq)             AS cost_sumsq,
    sum(log_cost_sum)           AS log_cost_sum,
    sum(log_cost_sumsq)         AS log_cost_sumsq,
    sum(quality_count)          AS quality_count,
    sum(quality_sum)            AS quality_sum,
    sum(quality_sumsq)          AS quality_sumsq,
    sum(latency_sum_ms)         AS latency_sum_ms,
    sumForEachState(latency_buckets) AS latency_buckets
FROM coalmine.version_stats
GROUP BY agent, version, hour;
