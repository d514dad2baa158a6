-- The audit trail of deployments: one row per deployment state record (topic
-- coalmine.deployments), that is one per generation of an agent's deployment, with what
-- changed it (`cause`: a command's action, `step`, `gate`, `judgement`), who and why.
--
-- The controller writes each generation once; the worker stores it once: it checks
-- (agent, generation) before inserting, so a record delivered again, a restart or a re-read
-- of the topic adds no row, and ReplacingMergeTree on (agent, generation) folds a copy a
-- rebalance race might still slip in. `state` is the whole record as JSON, `evidence` and
-- `plan` are JSON too. Phases are text: the controller may learn new ones.
CREATE TABLE IF NOT EXISTS coalmine.deployment_events
(
    agent            LowCardinality(String),
    generation       UInt64,
    time             DateTime64(3, 'UTC'),
    from_phase       LowCardinality(String),
    to_phase         LowCardinality(String),
    cause            LowCardinality(String),
    stable_version   String,
    stable_digest    String,
    canary_version   String,
    canary_digest    String,
    canary_weight    Float64,
    step_index       Nullable(UInt32),
    step_started_at  Nullable(DateTime64(3, 'UTC')),
    rollout_id       String,
    command_id       String,
    issued_by        String,
    reason           String,
    evidence         String,
    gate_cases       Nullable(UInt64),
    gate_quality     Nullable(Float64),
    gate_error_rate  Nullable(Float64),
    gate_passed      Nullable(Bool),
    plan             String,
    state            String CODEC(ZSTD(3)),
    kafka_offset     UInt64,
    stored_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (agent, generation);
