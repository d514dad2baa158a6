-- Per agent and version: traffic, errors, latency, cost and quality of the request spans
-- (one request span = one agent task), with cost summed over every span of the version.
-- Edit the time filter to look at another period.
SELECT
    agent,
    version,
    countIf(kind = 'request')                                            AS requests,
    round(countIf(kind = 'request' AND status = 'error') / requests, 4) AS error_rate,
    round(quantileIf(0.5)(duration_ms, kind = 'request'))                AS p50_ms,
    round(quantileIf(0.95)(duration_ms, kind = 'request'))               AS p95_ms,
    round(sum(cost_usd) / requests, 5)                                   AS cost_per_request,
    round(avgIf(quality_score, kind = 'request'), 3)                     AS quality,
    round(avgIf(toFloat64(task_completed), kind = 'request'), 3)         AS task_completion,
    round(countIf(kind = 'tool' AND status = 'error') / countIf(kind = 'tool'), 4)
                                                                         AS tool_error_rate
FROM coalmine.spans
WHERE start_time >= now64() - INTERVAL 1 HOUR
GROUP BY agent, version
ORDER BY agent, version
