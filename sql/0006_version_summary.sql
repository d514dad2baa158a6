-- The per-version table a person queries first, over a time range:
--
--   SELECT * FROM coalmine.version_summary(since = '2026-11-24 00:00:00', until = '2026-11-25 00:00:00')
--   SELECT * FROM coalmine.version_summary(since = now() - INTERVAL 1 HOUR, until = now())
--
-- One row per agent and version, from the windows whose `window_start` is in [since, until)
-- (UTC). Rates and per-request figures are NULL when their denominator is 0: error_rate and
-- the latency figures need requests, task_completion_rate attempted tasks, tool_error_rate
-- tool calls, quality_mean scored spans. cost_usd is the cost of every span of the version
-- (llm, tool, ...), so cost_per_request_usd is what one agent task costs; tokens_per_request
-- likewise. Latency quantiles come from the merged histograms: the smallest bucket whose
-- cumulative count reaches max(1, ceil(q * requests)), reported as the bucket's geometric
-- midpoint, exactly as schemas/window_stats.py `quantile_from_buckets` does, so within 4.7 %
-- of the exact quantile between 1 ms and 1,000,000 ms (clamped to those ends outside).
--
-- `version_summary` reads coalmine.version_stats with FINAL, so a partial row stored twice is
-- counted once. `version_summary_hourly` has the same call and columns but reads the hourly
-- rollup (0005): use it for ranges of days or weeks, with whole hours as bounds (an hour is
-- in the range when its start is; first_window and last_window are hours). It can differ
-- from version_summary by the rare row 0005's header describes (a crash between the base and
-- rollup writes, a duplicate from a rebalance race).

-- The value reported for latency bucket i of the grid in schemas/window_stats.py: 1 ms for
-- the underflow bucket 0, 10^6 ms for the overflow bucket 151, else the geometric midpoint
-- of (10^((i-1)/25), 10^(i/25)] ms (computed like Python's sqrt(lower * upper), so both
-- agree to the last bit). NULL for i = -1, the bucket of an empty histogram.
CREATE FUNCTION IF NOT EXISTS coalmine_latency_bucket_ms AS (i) -> multiIf(
    i < 0, NULL,
    i = 0, 1.0,
    i = 151, 1000000.0,
    sqrt(pow(10, (i - 1) / 25) * pow(10, i / 25))
);

-- The q-quantile of the latencies in a merged histogram (an Array(UInt64) of 152 counts:
-- sumForEach(latency_buckets) of base rows, sumForEachMerge(...) of rollup rows), in ms.
-- ClickHouse copies the body of a SQL function into the views below when they are created,
-- so they do not depend on the function afterwards; ad-hoc queries can call it directly.
CREATE FUNCTION IF NOT EXISTS coalmine_latency_quantile_ms AS (buckets, q) ->
    coalmine_latency_bucket_ms(
        arrayFirstIndex(
            cumulative -> cumulative >= greatest(1, ceil(q * arraySum(buckets) - 1e-9)),
            arrayCumSum(buckets)
        ) - 1
    );

CREATE VIEW IF NOT EXISTS coalmine.version_summary AS
SELECT
    agent,
    version,
    requests,
    errors,
    errors / nullIf(requests, 0)                               AS error_rate,
    coalmine_latency_quantile_ms(latency_buckets, 0.50)        AS latency_p50_ms,
    coalmine_latency_quantile_ms(latency_buckets, 0.95)        AS latency_p95_ms,
    coalmine_latency_quantile_ms(latency_buckets, 0.99)        AS latency_p99_ms,
    latency_sum_ms / nullIf(requests, 0)                       AS latency_mean_ms,
    cost_usd,
    cost_usd / nullIf(requests, 0)                             AS cost_per_request_usd,
    (input_tokens + output_tokens) / nullIf(requests, 0)       AS tokens_per_request,
    quality_sum / nullIf(quality_count, 0)                     AS quality_mean,
    tasks_completed / nullIf(tasks_attempted, 0)               AS task_completion_rate,
    tool_errors / nullIf(tool_calls, 0)                        AS tool_error_rate,
    llm_calls,
    tool_calls,
    guardrail_blocks,
    first_window,
    last_window
FROM
(
    SELECT
        agent,
        version,
        sum(requests)                    AS requests,
        sum(errors)                      AS errors,
        sum(tasks_attempted)             AS tasks_attempted,
        sum(tasks_completed)             AS tasks_completed,
        sum(tool_calls)                  AS tool_calls,
        sum(tool_errors)                 AS tool_errors,
        sum(llm_calls)                   AS llm_calls,
        sum(guardrail_blocks)            AS guardrail_blocks,
        sum(input_tokens)                AS input_tokens,
        sum(output_tokens)               AS output_tokens,
        sum(cost_sum)                    AS cost_usd,
        sum(quality_count)               AS quality_count,
        sum(quality_sum)                 AS quality_sum,
        sum(latency_sum_ms)              AS latency_sum_ms,
        sumForEach(latency_buckets)      AS latency_buckets,
        min(window_start)                AS first_window,
        max(window_start)                AS last_window
    FROM coalmine.version_stats FINAL
    WHERE window_start >= {since:DateTime('UTC')} AND window_start < {until:DateTime('UTC')}
    GROUP BY agent, version
)
ORDER BY agent, version;

CREATE VIEW IF NOT EXISTS coalmine.version_summary_hourly AS
SELECT
    agent,
    version,
    requests,
    errors,
    errors / nullIf(requests, 0)                               AS error_rate,
    coalmine_latency_quantile_ms(latency_buckets, 0.50)        AS latency_p50_ms,
    coalmine_latency_quantile_ms(latency_buckets, 0.95)        AS latency_p95_ms,
    coalmine_latency_quantile_ms(latency_buckets, 0.99)        AS latency_p99_ms,
    latency_sum_ms / nullIf(requests, 0)                       AS latency_mean_ms,
    cost_usd,
    cost_usd / nullIf(requests, 0)                             AS cost_per_request_usd,
    (input_tokens + output_tokens) / nullIf(requests, 0)       AS tokens_per_request,
    quality_sum / nullIf(quality_count, 0)                     AS quality_mean,
    tasks_completed / nullIf(tasks_attempted, 0)               AS task_completion_rate,
    tool_errors / nullIf(tool_calls, 0)                        AS tool_error_rate,
    llm_calls,
    tool_calls,
    guardrail_blocks,
    first_window,
    last_window
FROM
(
    SELECT
        agent,
        version,
        sum(requests)                    AS requests,
        sum(errors)                      AS errors,
        sum(tasks_attempted)             AS tasks_attempted,
        sum(tasks_completed)             AS tasks_completed,
        sum(tool_calls)                  AS tool_calls,
        sum(tool_errors)                 AS tool_errors,
        sum(llm_calls)                   AS llm_calls,
        sum(guardrail_blocks)            AS guardrail_blocks,
        sum(input_tokens)                AS input_tokens,
        sum(output_tokens)               AS output_tokens,
        sum(cost_sum)                    AS cost_usd,
        sum(quality_count)               AS quality_count,
        sum(quality_sum)                 AS quality_sum,
        sum(latency_sum_ms)              AS latency_sum_ms,
        sumForEachMerge(latency_buckets) AS latency_buckets,
        min(hour)                        AS first_window,
        max(hour)                        AS last_window
    FROM coalmine.version_stats_1h
    WHERE hour >= {since:DateTime('UTC')} AND hour < {until:DateTime('UTC')}
    GROUP BY agent, version
)
ORDER BY agent, version;
