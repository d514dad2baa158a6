-- What each agent and version cost per day over the last 30 days (UTC days, today included):
-- spend, requests, cost per request and tokens, from the hourly rollup so that it stays fast
-- over months.
--
-- cost_usd is the cost of every span of the version (llm, tool, ...), priced when the span
-- was ingested, so a price change shows from the day it took effect.
--
-- Adapt: another range in WHERE; local days with toDate(hour, 'Europe/Berlin') (zones with
-- whole-hour offsets); per agent only: drop `version` from SELECT, GROUP BY and ORDER BY.
SELECT
    toDate(hour)                    AS day,
    agent,
    version,
    sum(requests)                   AS requests,
    sum(cost_sum)                   AS cost_usd,
    cost_usd / nullIf(requests, 0)  AS cost_per_request_usd,
    sum(input_tokens)               AS input_tokens,
    sum(output_tokens)              AS output_tokens
FROM coalmine.version_stats_1h
WHERE hour >= toStartOfDay(now()) - INTERVAL 29 DAY
GROUP BY day, agent, version
ORDER BY day, agent, version
