"""`coalmine sql`'s session on real chDB: ClickHouse's parser, the allowlist, the limits.

One migrated embedded database for the module, opened twice as in the worker: a writing
client (the ingestion's stand-in) and the read-only query session.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from streams.settings import Settings
from streams.storage import clickhouse, sqlguard, sqlsession
from streams.storage.sqlguard import QueryRefusedError
from streams.storage.sqlsession import QueryFailedError, QuerySession

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
OUTFILE = "/tmp/coalmine-sql-attack-outfile"

ATTACKS = {
    # statement: what the refusal says
    "SELECT 1; CREATE TABLE default.x (a Int8) ENGINE=Memory; SELECT 2": "Multi-statements",
    "SELECT 1; INSERT INTO coalmine.spans (agent) VALUES ('x')": "Multi-statements",
    "SELECT 1; DROP TABLE coalmine.spans": "Multi-statements",
    "CREATE TABLE default.x (a Int8) ENGINE=Memory": "only SELECT and DESCRIBE",
    "DROP TABLE IF EXISTS default.nope": "only SELECT and DESCRIBE",
    "INSERT INTO coalmine.spans (agent) VALUES ('x')": "only SELECT and DESCRIBE",
    "SET readonly = 0": "only SELECT and DESCRIBE",
    "SYSTEM SHUTDOWN": "only SELECT and DESCRIBE",
    "SELECT file('/etc/passwd')": "function file is not allowed",
    "SELECT file('/proc/self/environ')": "function file is not allowed",
    "SELECT * FROM file('/etc/passwd', 'LineAsString')": "table function file is not allowed",
    "SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')": "table function url",
    "SELECT * FROM s3('http://127.0.0.1:1/b/k', 'CSV')": "table function s3",
    "SELECT * FROM remote('127.0.0.1:1', system.one)": "table function remote",
    "SELECT * FROM executable('id', 'TSV', 'x String')": "table function executable",
    "SELECT * FROM python('print(1)')": "table function python",
    "SELECT * FROM filesystem('/')": "table function filesystem",
    "SELECT * FROM merge('system', '.*')": "table function merge",
    f"SELECT 1 INTO OUTFILE '{OUTFILE}'": "INTO OUTFILE",
    f"DESCRIBE TABLE coalmine.spans INTO OUTFILE '{OUTFILE}'": "INTO OUTFILE",
    "SELECT 1 FORMAT CSV": "FORMAT",
    "SELECT * APPLY(file) FROM (SELECT '/etc/passwd' AS p)": "APPLY",
    "SELECT * FROM system.settings": "system table settings",
    "SELECT * FROM system.users": "system table users",
    "SELECT * FROM system.named_collections": "system table named_collections",
    "SELECT 1 IN system.settings": "system table settings",
    "SELECT getSetting('readonly')": "function getSetting",
    "SELECT hostName(), currentUser()": "function hostName",
    "SELECT dictGet('d', 'a', 1)": "function dictGet",
    "SELECT sleepEachRow(1) FROM numbers(100)": "function sleepEachRow",
    "SELECT 1 SETTINGS max_execution_time = 0": "readonly",
    "SELECT 1" + " " * 300_000: "characters long",
}
LIMITED = {
    "SELECT groupArray(number) FROM numbers(1000000000)": "memory limit",
    "SELECT * FROM system.numbers": "Limit for result exceeded",
    "SELECT randomPrintableASCII(1000000) FROM numbers(100)": "Limit for result exceeded",
}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home = tmp_path_factory.mktemp("sql-session")
    return replace(Settings.from_env(), home=home, clickhouse_url=f"chdb://{home / 'chdb'}")


@pytest.fixture(scope="module")
def ingestion(settings: Settings) -> Iterator[Client]:
    client = clickhouse.connect(settings)
    clickhouse.migrate(client)
    yield client
    client.close()  # frees the process's one chDB slot for other modules


@pytest.fixture(scope="module")
def session(ingestion: Client, settings: Settings) -> Iterator[QuerySession]:
    opened = sqlsession.connect(settings)
    yield opened
    opened.close()


def readme_queries() -> list[str]:
    return [
        q
        for q in re.findall(r'coalmine sql "([^"$]+)"', README.read_text(encoding="utf-8"))
        if "..." not in q
    ]


LEGITIMATE = [
    *readme_queries(),
    *(
        clickhouse.example_query(p.stem)
        for p in (clickhouse.migrations_dir() / "queries").glob("*.sql")
    ),
    "SELECT * FROM coalmine.version_summary(since = '2026-11-24 00:00:00', until = now())",
    "SELECT * FROM coalmine.version_summary_hourly(since = now() - INTERVAL 7 DAY, until = now())",
    "SELECT name, engine FROM system.tables WHERE database = 'coalmine' ORDER BY name",
    "SELECT table, name, type FROM system.columns WHERE database = 'coalmine' AND table = 'spans'",
    "SELECT * FROM information_schema.tables WHERE table_schema = 'coalmine'",
    "DESCRIBE TABLE coalmine.spans",
    "SELECT coalmine_latency_quantile_ms(sumForEachMerge(latency_buckets), 0.95) "
    "FROM coalmine.version_stats_1h",
    "SELECT COUNT(DISTINCT agent), countIf(status = 'error') FROM coalmine.spans;",
    "WITH t AS (SELECT number AS n FROM numbers(10)) SELECT sum(n) FROM t -- a comment",
]


def test_the_readme_and_the_example_queries_are_found() -> None:
    assert len(readme_queries()) >= 1
    assert len(LEGITIMATE) >= 15


@pytest.mark.parametrize("query", LEGITIMATE)
def test_legitimate_queries_run(session: QuerySession, query: str) -> None:
    columns, _ = session.run(query)
    assert columns


@pytest.mark.parametrize("query", sorted(ATTACKS))
def test_attacks_are_refused(session: QuerySession, ingestion: Client, query: str) -> None:
    with pytest.raises((QueryRefusedError, QueryFailedError), match=ATTACKS[query]):
        session.run(query)
    assert session.run("SELECT 41 + 1") == (["plus(41, 1)"], [[42]])


def test_the_attacks_wrote_nothing_and_left_ingestion_writable(
    session: QuerySession, ingestion: Client
) -> None:
    for query in ATTACKS:
        with pytest.raises((QueryRefusedError, QueryFailedError)):
            session.run(query)
    assert not Path(OUTFILE).exists()
    assert ingestion.command("EXISTS TABLE default.x") == 0
    assert ingestion.query("SELECT getSetting('readonly')").result_rows == [(0,)]
    ingestion.command("CREATE TABLE default.ingestion_can_write (a Int8) ENGINE = Memory")
    ingestion.command("DROP TABLE default.ingestion_can_write")


@pytest.mark.parametrize("query", sorted(LIMITED))
def test_limits_stop_queries(session: QuerySession, query: str) -> None:
    with pytest.raises(QueryFailedError, match=LIMITED[query]):
        session.run(query)


def test_a_failed_query_leaves_nothing_in_the_next_answer(session: QuerySession) -> None:
    """chDB hands a failed query's partial output to the next query; the session drains it."""
    with pytest.raises(QueryFailedError, match="throwIf"):
        session.run("SELECT throwIf(number = 90000) AS x FROM numbers(99000)")
    assert session.run("SELECT 7 AS z") == (["z"], [[7]])


def test_the_allowlist_names_only_what_clickhouse_has(ingestion: Client) -> None:
    """No typo or removed name on the list, and nothing of the catalog off the list passes."""
    allowlist = sqlguard.default_allowlist()
    catalog = {
        name: bool(aggregate)
        for name, aggregate in ingestion.query(
            "SELECT name, is_aggregate FROM system.functions"
        ).result_rows
    }
    syntax = {"lambda", "exists", "grouping"}
    missing = [
        name
        for name in allowlist.functions.exact | allowlist.aggregates.exact
        if name not in catalog and name not in syntax
    ]
    assert missing == []
    assert all(catalog[name] for name in allowlist.aggregates.exact)
    for name in catalog:
        listed = name in allowlist.functions.exact or name in allowlist.aggregates.exact
        assert allowlist.allows_function(name) == listed, name
    table_functions = {
        row[0] for row in ingestion.query("SELECT name FROM system.table_functions").result_rows
    }
    assert allowlist.table_functions.exact <= table_functions
    system_tables = {
        row[0]
        for row in ingestion.query(
            "SELECT name FROM system.tables WHERE database = 'system'"
        ).result_rows
    }
    assert allowlist.system_tables.exact <= system_tables
