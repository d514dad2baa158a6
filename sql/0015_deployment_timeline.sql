-- One deployment's story, in order: the deploy, each step, the judge's verdict changes, the
-- alerts, rollback requests and the rollback or promotion, for one agent and rollout (the
-- deploy command's id, `rollout_id` in coalmine.deployment_events and `coalmine status`):
--
--   SELECT * FROM coalmine.deployment_timeline(agent = 'support-bot', rollout_id = 'cli-3f2a...')
--
-- Columns: `time`; `source` (deployment, judgement, alert, rollback); `event` (a deployment
-- row's cause: deploy, step, judgement, rollback, promote...; a judgement's verdict; an
-- alert's kind; `requested` for a rollback request); `version` (the canary, or the version
-- an alert is about); `canary_weight` (deployment rows: the canary's share from then on);
-- `detail` (one readable line); `ref` (the generation, judgement, alert or rollback id).
--
-- Judgements are shown when the verdict changes (the first one included), not every window:
-- every judgement is in coalmine.judgements. A rollback request belongs to the rollout when
-- the controller applied it to it (a deployment row names it) or when it cites one of the
-- rollout's alerts. Rows at the same millisecond are in causal order: judgement, alert,
-- rollback request, deployment change.
CREATE VIEW IF NOT EXISTS coalmine.deployment_timeline AS
SELECT time, source, event, version, canary_weight, detail, ref
FROM
(
    SELECT
        time,
        4                                   AS rank,
        kafka_offset                        AS position,
        'deployment'                        AS source,
        cause                               AS event,
        canary_version                      AS version,
        CAST(canary_weight, 'Nullable(Float64)') AS canary_weight,
        concat(
            from_phase, ' -> ', to_phase,
            if(canary_version = '', '', concat(', canary ', canary_version)),
            ', stable ', if(stable_version = '', '-', stable_version),
            if(issued_by = '', '', concat(', by ', issued_by)),
            if(reason = '', '', concat(': ', reason))
        )                                   AS detail,
        toString(generation)                AS ref
    FROM coalmine.deployment_events FINAL
    WHERE agent = {agent:String} AND rollout_id = {rollout_id:String}

    UNION ALL

    SELECT time, 1, position, 'judgement', verdict, canary_version, NULL,
           concat('after ', toString(windows_compared), ' windows: ', explanation), id
    FROM
    (
        SELECT
            time,
            kafka_offset AS position,
            verdict,
            canary_version,
            windows_compared,
            explanation,
            id,
            lagInFrame(verdict, 1, '') OVER (
                ORDER BY time, kafka_offset ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
            ) AS previous_verdict
        FROM coalmine.judgements FINAL
        WHERE agent = {agent:String} AND rollout_id = {rollout_id:String}
    )
    WHERE verdict != previous_verdict

    UNION ALL

    SELECT time, 2, kafka_offset, 'alert', kind, version, NULL,
           concat(severity, ': ', message), id
    FROM coalmine.alerts FINAL
    WHERE agent = {agent:String} AND rollout_id = {rollout_id:String}

    UNION ALL

    SELECT time, 3, kafka_offset, 'rollback', 'requested', from_version, NULL,
           concat(
               'roll back ', from_version,
               if(to_version = '', '', concat(' to ', to_version)),
               ', by ', issued_by,
               if(reason = '', '', concat(': ', reason))
           ),
           id
    FROM coalmine.rollbacks FINAL
    WHERE agent = {agent:String}
      AND (
          id IN (
              SELECT command_id FROM coalmine.deployment_events
              WHERE agent = {agent:String} AND rollout_id = {rollout_id:String}
          )
          OR hasAny(
              alert_ids,
              (
                  SELECT groupArray(id) FROM coalmine.alerts
                  WHERE agent = {agent:String} AND rollout_id = {rollout_id:String}
              )
          )
      )
)
ORDER BY time, rank, position;
