-- How the versions fail, over the last 24 hours: per agent, version and kind of span, how
-- many spans ended with each error_type, when first and last, and the latest message.
--
-- From coalmine.spans. A failed tool call that fails its request shows twice: once as a
-- `tool` span and once as the `request` span, usually with the same error_type.
--
-- Adapt: one version: add `AND agent = 'support-bot' AND version = 'v13'` to WHERE; only
-- whole requests: `AND kind = 'request'`; another period: change the INTERVAL.
SELECT
    agent,
    version,
    kind,
    error_type,
    count()                             AS errors,
    min(start_time)                     AS first_seen,
    max(start_time)                     AS last_seen,
    argMax(error_message, start_time)   AS latest_message
FROM coalmine.spans
WHERE status = 'error' AND start_time >= now64() - INTERVAL 1 DAY
GROUP BY agent, version, kind, error_type
ORDER BY agent, version, errors DESC, kind, error_type
