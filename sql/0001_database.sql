-- The database every Coalmine object lives in, and the record of applied migrations.
CREATE DATABASE IF NOT EXISTS coalmine;

CREATE TABLE IF NOT EXISTS coalmine.schema_migrations
(
    version    UInt32,
    name       String,
    checksum   String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY version;
