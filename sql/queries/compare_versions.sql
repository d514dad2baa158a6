-- Each version of an agent next to the agent's most-requested version (its baseline) over the
-- last hour: is the newer version worse, and on what?
--
-- One row per non-baseline version, from coalmine.version_summary. `*_ratio` is the version's
-- figure divided by the baseline's: above 1 means more errors, latency, cost or tokens (worse)
-- or more quality and completed tasks (better); NULL when the baseline's figure is 0 or
-- unknown. A tie for most requests goes to the later version name. Latency figures come from
-- the histograms, so their ratios move in steps of 10^(1/25) (about 9.6 %).
--
-- Adapt: another period in `summary` (since = '2026-11-24 00:00:00', until = '2026-11-25
-- 00:00:00'); a named baseline instead of the busiest version: replace the subquery in
-- `baseline` by `WHERE version = 'v12'`; days or weeks: version_summary_hourly.
WITH
    summary AS
    (
        SELECT * FROM coalmine.version_summary(since = now() - INTERVAL 1 HOUR, until = now())
    ),
    baseline AS
    (
        SELECT *
        FROM summary
        WHERE (agent, version) IN
            (SELECT agent, argMax(version, (requests, version)) FROM summary GROUP BY agent)
    )
SELECT
    s.agent                                                     AS agent,
    s.version                                                   AS version,
    b.version                                                   AS baseline,
    s.requests                                                  AS requests,
    b.requests                                                  AS baseline_requests,
    s.error_rate                                                AS error_rate,
    b.error_rate                                                AS baseline_error_rate,
    s.error_rate / nullIf(b.error_rate, 0)                      AS error_rate_ratio,
    s.latency_p95_ms                                            AS latency_p95_ms,
    b.latency_p95_ms                                            AS baseline_latency_p95_ms,
    s.latency_p50_ms / b.latency_p50_ms                         AS latency_p50_ratio,
    s.latency_p95_ms / b.latency_p95_ms                         AS latency_p95_ratio,
    s.latency_p99_ms / b.latency_p99_ms                         AS latency_p99_ratio,
    s.cost_per_request_usd                                      AS cost_per_request_usd,
    b.cost_per_request_usd                                      AS baseline_cost_per_request_usd,
    s.cost_per_request_usd / nullIf(b.cost_per_request_usd, 0)  AS cost_per_request_ratio,
    s.tokens_per_request / nullIf(b.tokens_per_request, 0)      AS tokens_per_request_ratio,
    s.quality_mean                                              AS quality_mean,
    b.quality_mean                                              AS baseline_quality_mean,
    s.quality_mean / nullIf(b.quality_mean, 0)                  AS quality_mean_ratio,
    s.task_completion_rate / nullIf(b.task_completion_rate, 0)  AS task_completion_ratio,
    s.tool_error_rate / nullIf(b.tool_error_rate, 0)            AS tool_error_rate_ratio
FROM summary AS s
INNER JOIN baseline AS b ON s.agent = b.agent
WHERE s.version != b.version
ORDER BY agent, version
