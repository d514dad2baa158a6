-- Human approval of tool calls: one row per record of coalmine.approval-requests (`event` =
-- 'request') and of coalmine.approval-decisions (`event` = 'approve', 'deny' or 'expire', the
-- asking agent's record that the deadline passed). `appended_at` is the broker's append time
-- (both topics use LogAppendTime), `time` the sender's clock; `actor` is who asked (a request)
-- or who decided. Requests carry what would run: version, tool, the arguments as JSON
-- (redacted by the version's policy), why the policy asked, the deadline, trace and span ids.
--
-- The worker stores each record once: it checks (event = 'request', kafka_offset) before
-- inserting, so a record delivered again or a restart adds nothing; ReplacingMergeTree is the
-- backstop. A decision sent twice is two records, both stored: the views apply the rule.
CREATE TABLE IF NOT EXISTS coalmine.approvals
(
    request_id    String,
    event         LowCardinality(String),
    event_id      String,
    agent         LowCardinality(String),
    version       String,
    environment   LowCardinality(String),
    tenant        String,
    tool          LowCardinality(String),
    arguments     String,
    asks_because  String,
    on_timeout    LowCardinality(String),
    deadline      Nullable(DateTime64(3, 'UTC')),
    trace_id      String,
    span_id       String,
    actor         String,
    reason        String,
    time          DateTime64(3, 'UTC'),
    appended_at   DateTime64(3, 'UTC'),
    kafka_offset  UInt64,
    stored_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (request_id, event = 'request', kafka_offset);

-- One row per request with what came of it, by the rule every reader applies (the SDK, the
-- command line: streams/sdk/approval_rules.py `judge`): the request's first decision in log
-- order that is an 'expire' or was appended no later than the deadline wins; the others are
-- refused. `outcome`: granted, denied, timed_out (an expire won, or the deadline passed with
-- no decision: any later one is refused), pending. `seconds_to_decision`: from the request's
-- append to a person's winning decision's (NULL for timeouts and pending requests): people's
-- time, apart from the agent's.
CREATE VIEW IF NOT EXISTS coalmine.approval_outcomes AS
WITH
    requests AS (
        SELECT
            request_id,
            any(agent) AS agent,
            any(version) AS version,
            any(environment) AS environment,
            any(tool) AS tool,
            any(asks_because) AS asks_because,
            any(on_timeout) AS on_timeout,
            any(actor) AS requested_by,
            any(time) AS asked_at,
            any(appended_at) AS requested_at,
            any(assumeNotNull(deadline)) AS deadline
        FROM coalmine.approvals
        WHERE event = 'request'
        GROUP BY request_id
    ),
    decisions AS (
        SELECT
            d.request_id AS request_id,
            uniqExact(d.kafka_offset) AS decisions,
            argMinIf(d.event, d.kafka_offset, d.event = 'expire' OR d.appended_at <= r.deadline)
                AS decision,
            argMinIf(d.actor, d.kafka_offset, d.event = 'expire' OR d.appended_at <= r.deadline)
                AS decided_by,
            argMinIf(d.reason, d.kafka_offset, d.event = 'expire' OR d.appended_at <= r.deadline)
                AS decision_reason,
            argMinIf(d.appended_at, d.kafka_offset, d.event = 'expire' OR d.appended_at <= r.deadline)
                AS decided_at
        FROM coalmine.approvals AS d
        INNER JOIN requests AS r ON d.request_id = r.request_id
        WHERE d.event != 'request'
        GROUP BY d.request_id
    )
SELECT
    r.request_id AS request_id,
    r.agent AS agent,
    r.version AS version,
    r.environment AS environment,
    r.tool AS tool,
    r.asks_because AS asks_because,
    r.on_timeout AS on_timeout,
    r.requested_by AS requested_by,
    r.asked_at AS asked_at,
    r.requested_at AS requested_at,
    r.deadline AS deadline,
    multiIf(
        d.decision = 'approve', 'granted',
        d.decision = 'deny', 'denied',
        d.decision = 'expire' OR now64(3) > r.deadline, 'timed_out',
        'pending'
    ) AS outcome,
    if(d.decision = '', NULL, d.decided_by) AS decided_by,
    if(d.decision = '', NULL, d.decision_reason) AS decision_reason,
    if(d.decision = '', NULL, d.decided_at) AS decided_at,
    if(
        d.decision IN ('approve', 'deny'),
        dateDiff('millisecond', r.requested_at, d.decided_at) / 1000.0,
        NULL
    ) AS seconds_to_decision,
    d.decisions - (d.decision != '') AS refused_decisions
FROM requests AS r
LEFT JOIN decisions AS d ON d.request_id = r.request_id;

-- Per agent and version: approvals asked, granted, denied, timed out, still pending, the
-- decisions refused (twice, late), and people's time to decide (granted and denied only).
-- A canary that asks far more often than its stable (asked per request: join with
-- version_summary) changed its tools' arguments or its policy.
CREATE VIEW IF NOT EXISTS coalmine.approval_summary AS
SELECT
    agent,
    version,
    count() AS asked,
    countIf(outcome = 'granted') AS granted,
    countIf(outcome = 'denied') AS denied,
    countIf(outcome = 'timed_out') AS timed_out,
    countIf(outcome = 'pending') AS pending,
    sum(refused_decisions) AS refused_decisions,
    if(countIf(outcome IN ('granted', 'denied')) = 0, NULL,
       avgIf(seconds_to_decision, outcome IN ('granted', 'denied'))) AS mean_seconds_to_decision,
    if(countIf(outcome IN ('granted', 'denied')) = 0, NULL,
       quantileExactIf(0.5)(seconds_to_decision, outcome IN ('granted', 'denied')))
        AS p50_seconds_to_decision,
    if(countIf(outcome IN ('granted', 'denied')) = 0, NULL,
       quantileExactIf(0.95)(seconds_to_decision, outcome IN ('granted', 'denied')))
        AS p95_seconds_to_decision,
    min(asked_at) AS first_asked,
    max(asked_at) AS last_asked
FROM coalmine.approval_outcomes
GROUP BY agent, version;
