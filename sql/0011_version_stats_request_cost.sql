-- Cost per request, beside cost per span (schemas/window_stats.py, streams/ingest/aggregate.py).
--
-- `cost_count` and the `cost_*` / `log_cost_*` sums run over priced spans, so an agent that
-- loops into twice the llm calls at the same price per call leaves them as they were. The
-- columns added here run over priced *requests*: `request_cost_count` requests, each with the
-- cost total of its trace's priced spans that arrived in the same Kafka message as its
-- request span (the SDK sends a request's spans together); `request_cost_sum` adds up those
-- totals and `request_log_cost_sum` / `request_log_cost_sumsq` their ln(total + 1e-6 USD),
-- the scale the detector judges cost on. Spans that arrived in another message count in the
-- per-span sums only, so `request_cost_sum` <= `cost_sum`; when every request's spans arrive
-- together, they are equal, and `version_summary`'s cost_per_request_usd (`cost_sum` /
-- `requests`) is the mean of these totals over all requests, unpriced ones counting 0.
-- Recomputing them from coalmine.spans: group the spans by (kafka_partition, kafka_offset,
-- trace_id), keep the groups holding a request span and a priced span, sum the priced costs;
-- each total belongs to the window of the group's last request span (highest kafka_index).
--
-- Rows written before this migration read 0 (no priced request), as do records on
-- coalmine.version-stats that lack the fields. The rollups (0005) keep every measure of the
-- base table, so they gain the columns too, and their views sum them from now on (ALTER ...
-- MODIFY QUERY swaps a view's query in one step: no insert is missed in between).

ALTER TABLE coalmine.version_stats
    ADD COLUMN IF NOT EXISTS request_cost_count UInt64 DEFAULT 0 AFTER log_cost_sumsq,
    ADD COLUMN IF NOT EXISTS request_cost_sum Float64 DEFAULT 0 AFTER request_cost_count,
    ADD COLUMN IF NOT EXISTS request_log_cost_sum Float64 DEFAULT 0 AFTER request_cost_sum,
    ADD COLUMN IF NOT EXISTS request_log_cost_sumsq Float64 DEFAULT 0 AFTER request_log_cost_sum;

ALTER TABLE coalmine.version_stats_1m
    ADD COLUMN IF NOT EXISTS request_cost_count SimpleAggregateFunction(sum, UInt64) DEFAULT 0
        AFTER log_cost_sumsq,
    ADD COLUMN IF NOT EXISTS request_cost_sum SimpleAggregateFunction(sum, Float64) DEFAULT 0
        AFTER request_cost_count,
    ADD COLUMN IF NOT EXISTS request_log_cost_sum SimpleAggregateFunction(sum, Float64) DEFAULT 0
        AFTER request_cost_sum,
    ADD COLUMN IF NOT EXISTS request_log_cost_sumsq SimpleAggregateFunction(sum, Float64) DEFAULT 0
        AFTER request_log_cost_sum;

ALTER TABLE coalmine.version_stats_1h
    ADD COLUMN IF NOT EXISTS request_cost_count SimpleAggregateFunction(sum, UInt64) DEFAULT 0
        AFTER log_cost_sumsq,
    ADD COLUMN IF NOT EXISTS request_cost_sum SimpleAggregateFunction(sum, Float64) DEFAULT 0
        AFTER request_cost_count,
    ADD COLUMN IF NOT EXISTS request_log_cost_sum SimpleAggregateFunction(sum, Float64) DEFAULT 0
        AFTER request_cost_sum,
    ADD COLUMN IF NOT EXISTS request_log_cost_sumsq SimpleAggregateFunction(sum, Float64) DEFAULT 0
        AFTER request_log_cost_sum;

ALTER TABLE coalmine.version_stats_1m_mv MODIFY QUERY
SELECT
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
    sum(request_cost_count)       AS request_cost_count,
    sum(request_cost_sum)         AS request_cost_sum,
    sum(request_log_cost_sum)     AS request_log_cost_sum,
    sum(request_log_cost_sumsq)   AS request_log_cost_sumsq,
    sum(quality_count)            AS quality_count,
    sum(quality_sum)              AS quality_sum,
    sum(quality_sumsq)            AS quality_sumsq,
    sum(latency_sum_ms)           AS latency_sum_ms,
    sumForEachState(latency_buckets) AS latency_buckets
FROM coalmine.version_stats
GROUP BY agent, version, minute;

ALTER TABLE coalmine.version_stats_1h_mv MODIFY QUERY
SELECT
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
    sum(request_cost_count)     AS request_cost_count,
    sum(request_cost_sum)       AS request_cost_sum,
    sum(request_log_cost_sum)   AS request_log_cost_sum,
    sum(request_log_cost_sumsq) AS request_log_cost_sumsq,
    sum(quality_count)          AS quality_count,
    sum(quality_sum)            AS quality_sum,
    sum(quality_sumsq)          AS quality_sumsq,
    sum(latency_sum_ms)         AS latency_sum_ms,
    sumForEachState(latency_buckets) AS latency_buckets
FROM coalmine.version_stats
GROUP BY agent, version, hour;
