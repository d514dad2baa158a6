-- The slowest tools over the last 24 hours: calls, error rate and p50 / p95 / p99 duration of
-- each agent's tools, slowest p95 first.
--
-- From coalmine.spans (`tool` spans; a span without tool_name is listed under its name).
-- quantile() is exact up to 8,192 calls per tool and samples beyond that.
--
-- Adapt: one version: add `AND version = 'v13'` to WHERE; per version: add `version` to
-- SELECT and GROUP BY; another period: change the INTERVAL.
SELECT
    agent,
    if(tool_name != '', tool_name, name)        AS tool,
    count()                                     AS calls,
    countIf(status = 'error') / calls           AS error_rate,
    quantile(0.50)(duration_ms)                 AS p50_ms,
    quantile(0.95)(duration_ms)                 AS p95_ms,
    quantile(0.99)(duration_ms)                 AS p99_ms
FROM coalmine.spans
WHERE kind = 'tool' AND start_time >= now64() - INTERVAL 1 DAY
GROUP BY agent, tool
ORDER BY p95_ms DESC, agent, tool
LIMIT 20
