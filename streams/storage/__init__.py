"""ClickHouse: the client, migrations, the span and window writers, read-only queries."""
