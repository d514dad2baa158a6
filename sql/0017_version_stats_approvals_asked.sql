-- Approvals asked per window (schemas/window_stats.py, streams/ingest/aggregate.py).
--
-- `approvals_asked` adds up, over a window's request spans, their attribute
-- `coalmine.approvals_asked`: how many of the request's tool calls its version's policy held
-- for a person's approval (the SDK sets it when the request ends). The detector judges it as
-- a rate per request (`approval_rate`): a canary that asks people far more often than stable
-- is a regression. Recomputing it from coalmine.spans:
--
--   SELECT version, sum(toUInt64OrZero(attributes['coalmine.approvals_asked']))
--   FROM coalmine.spans WHERE kind = 'request' GROUP BY version
--
-- Rows written before this migration read 0, as do records on coalmine.version-stats that
-- lack the field. The rollups (0005) keep every measure of the base table, so they gain the
-- column too, and their views sum it from now on (ALTER ... MODIFY QUERY swaps a view's
-- query in one step: no insert is missed in between).

ALTER TABLE coalmine.version_stats
    ADD COLUMN IF NOT EXISTS approvals_asked UInt64 DEFAULT 0 AFTER quality_sumsq;

ALTER TABLE coalmine.version_stats_1m
    ADD COLUMN IF NOT EXISTS approvals_asked SimpleAggregateFunction(sum, UInt64) DEFAULT 0
        AFTER quality_sumsq;

ALTER TABLE coalmine.version_stats_1h
    ADD COLUMN IF NOT EXISTS approvals_asked SimpleAggregateFunction(sum, UInt64) DEFAULT 0
        AFTER quality_sumsq;

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
    sum(approvals_asked)          AS approvals_asked,
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
    sum(approvals_asked)        AS approvals_asked,
    sum(latency_sum_ms)         AS latency_sum_ms,
    sumForEachState(latency_buckets) AS latency_buckets
FROM coalmine.version_stats
GROUP BY agent, version, hour;
