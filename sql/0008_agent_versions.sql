-- One row per registered agent version (topic coalmine.versions), stored by the worker.
--
-- A version is immutable: the first record of a label (agent, version) on the topic is the
-- version, a later record with other content is a conflict that is never stored (see
-- streams/versions/catalog.py). The worker checks (agent, version) before inserting, so a
-- record delivered again, a restart or a re-read adds no row; ReplacingMergeTree on
-- (agent, version) is the backstop for a copy a rebalance race might still slip in.
-- `bundle` is the canonical JSON of the content, the text `digest` is the sha256 of; the
-- columns before it are copied out of it for queries.
CREATE TABLE IF NOT EXISTS coalmine.agent_versions
(
    agent           LowCardinality(String),
    version         String,
    digest          String,
    created_at      DateTime64(3, 'UTC'),
    created_by      String,
    description     String,
    provider        LowCardinality(String),
    model           LowCardinality(String),
    prompt_names    Array(String),
    tool_names      Array(String),
    bundle          String CODEC(ZSTD(3)),
    kafka_offset    UInt64,
    stored_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (agent, version);
