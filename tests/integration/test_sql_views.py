"""The SQL people query first (version_summary, the rollups, sql/queries/), on real chDB.

Each test stores rows built from per-request arrays it keeps, and checks what ClickHouse
answers against the same arrays computed with numpy. The tests share one migrated embedded
database (chDB opens one data folder per process at a time) and each uses its own agents.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import clickhouse_connect
import numpy as np
import numpy.typing as npt
import pytest
from clickhouse_connect.driver.client import Client

from schemas.window_stats import (
    COUNT_FIELDS,
    LATENCY_BUCKET_COUNT,
    QUANTILE_MAX_RELATIVE_ERROR,
    SUM_FIELDS,
    WindowStats,
    quantile_from_buckets,
)
from streams.ingest.aggregate import VERSION_STATS_COLUMNS, WindowRow, row_source, version_stats_row
from streams.storage.clickhouse import example_query, migrate, migrations_dir

pytestmark = pytest.mark.integration

TOPIC = "coalmine.traces"
WINDOW_S = 5
QUANTILES = {"latency_p50_ms": 0.50, "latency_p95_ms": 0.95, "latency_p99_ms": 0.99}
SUMMARY_COLUMNS = [
    "agent",
    "version",
    "requests",
    "errors",
    "error_rate",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "latency_mean_ms",
    "cost_usd",
    "cost_per_request_usd",
    "tokens_per_request",
    "quality_mean",
    "task_completion_rate",
    "tool_error_rate",
    "llm_calls",
    "tool_calls",
    "guardrail_blocks",
    "first_window",
    "last_window",
]
Row = dict[str, Any]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """A fresh embedded database with every migration applied."""
    path = tmp_path_factory.mktemp("sql-views") / "chdb"
    path.mkdir()
    chdb = clickhouse_connect.get_client(dsn=f"chdb://{path}")
    migrate(chdb)
    yield chdb
    chdb.close()  # frees the process's one chDB slot for other modules


@pytest.fixture(scope="module")
def hour() -> datetime:
    """The start of an hour two hours ago: recent enough for every TTL and relative filter."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)


# --- building rows from known per-request arrays --------------------------------------------


@dataclass(frozen=True)
class Part:
    """One version_stats row and the per-request arrays it was built from."""

    row: WindowRow
    latency_ms: npt.NDArray[np.float64]
    error: npt.NDArray[np.bool_]
    cost_usd: npt.NDArray[np.float64]
    quality: npt.NDArray[np.float64]
    task_completed: npt.NDArray[np.bool_]

    @property
    def stats(self) -> WindowStats:
        return self.row.stats


def make_part(
    rng: np.random.Generator,
    agent: str,
    version: str,
    window_start: datetime,
    *,
    partition: int,
    offset_from: int,
    requests: int,
    slowdown: float = 1.0,
    error_rate: float = 0.05,
    late: bool = False,
) -> Part:
    """A random partial with ``requests`` requests; about two priced spans per request."""
    latency = rng.lognormal(5.5, 1.0, requests) * slowdown
    error = rng.random(requests) < error_rate
    cost = rng.lognormal(-6.0, 0.8, rng.integers(0, 2 * requests + 1))
    request_cost = rng.lognormal(-5.3, 0.8, rng.binomial(requests, 0.9))
    quality = rng.random(rng.binomial(requests, 0.8))
    tasks = rng.random(rng.binomial(requests, 0.9)) < 0.85
    tool_calls = int(rng.integers(0, 3 * requests + 1))
    stats = WindowStats.from_arrays(
        agent=agent,
        version=version,
        window_start=window_start,
        window_seconds=WINDOW_S,
        source=row_source(TOPIC, partition, offset_from),
        latency_ms=latency,
        error=error,
        cost_usd=cost,
        request_cost_usd=request_cost,
        quality=quality,
        task_completed=tasks,
        tool_calls=tool_calls,
        tool_errors=int(rng.binomial(tool_calls, 0.1)),
        llm_calls=2 * requests,
        guardrail_blocks=int(rng.integers(0, 3)),
        input_tokens=int(rng.integers(0, 900 * requests + 1)),
        output_tokens=int(rng.integers(0, 200 * requests + 1)),
    )
    offset_until = offset_from + max(1, requests)
    row = WindowRow(stats, TOPIC, partition, offset_from, offset_until, late)
    return Part(row, latency, error, cost, quality, tasks)


def insert(client: Client, parts: Sequence[Part]) -> None:
    """One insert, as VersionStatsWriter does it."""
    client.insert(
        "coalmine.version_stats",
        [version_stats_row(part.row) for part in parts],
        column_names=list(VERSION_STATS_COLUMNS),
    )


def merged_buckets(parts: Sequence[Part]) -> list[int]:
    return [int(c) for c in np.sum([p.stats.latency_buckets for p in parts], axis=0)]


def total(parts: Sequence[Part], name: str) -> Any:
    return sum(getattr(part.stats, name) for part in parts)


def query(client: Client, sql: str) -> list[Row]:
    """Rows of a read-only query as dicts of Python values (dates, numbers) to compare with.
    That `coalmine sql` accepts and runs these queries is tests/integration/test_sql_page.py's."""
    result = client.query(sql, settings={"readonly": 1})
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


def summary(
    client: Client, view: str, agent: str, since: datetime, until: datetime
) -> dict[str, Row]:
    """A summary view's rows of ``agent`` per version; the bounds are passed as the literals
    a user types."""
    rows = query(
        client,
        f"SELECT * FROM coalmine.{view}(since = '{since:%Y-%m-%d %H:%M:%S}', "
        f"until = '{until:%Y-%m-%d %H:%M:%S}')",
    )
    return {row["version"]: row for row in rows if row["agent"] == agent}


def naive(at: datetime) -> datetime:
    """clickhouse-connect returns UTC DateTime values without tzinfo."""
    return at.astimezone(UTC).replace(tzinfo=None)


# --- version_summary ------------------------------------------------------------------------


def test_version_summary_equals_a_recomputation_from_the_requests(
    client: Client, hour: datetime
) -> None:
    rng = np.random.default_rng(20261124)
    since, until = hour + timedelta(minutes=10), hour + timedelta(minutes=20)
    windows = [since + timedelta(seconds=WINDOW_S * k) for k in (0, *range(7, 113, 9), 119)]
    inside: dict[str, list[Part]] = {"v1": [], "v2": []}
    offsets = iter(range(0, 10**9, 1000))
    for version, slowdown, error_rate in (("v1", 1.0, 0.03), ("v2", 1.4, 0.08)):
        for start in windows:
            for partition in (0, 1, 2):
                inside[version].append(
                    make_part(
                        rng,
                        "summary-bot",
                        version,
                        start,
                        partition=partition,
                        offset_from=next(offsets),
                        requests=int(rng.poisson(8)),
                        slowdown=slowdown,
                        error_rate=error_rate,
                    )
                )
            # A correction row: spans of the window that came after it was emitted.
            inside[version].append(
                make_part(
                    rng,
                    "summary-bot",
                    version,
                    start,
                    partition=0,
                    offset_from=next(offsets),
                    requests=2,
                    slowdown=slowdown,
                    late=True,
                )
            )
    # Just outside [since, until): so many slow failures that counting them would show.
    outside = [
        make_part(
            rng,
            "summary-bot",
            version,
            start,
            partition=0,
            offset_from=next(offsets),
            requests=500,
            slowdown=1000.0,
            error_rate=1.0,
        )
        for version in ("v1", "v2")
        for start in (since - timedelta(seconds=WINDOW_S), until)
    ]
    everything = [*inside["v1"], *inside["v2"], *outside]
    for batch in np.array_split(np.arange(len(everything)), 4):
        insert(client, [everything[i] for i in batch])
    insert(client, inside["v2"][3:4])  # a row stored twice (a rebalance race): counted once

    got = summary(client, "version_summary", "summary-bot", since, until)

    assert sorted(got) == ["v1", "v2"]
    for version, parts in inside.items():
        row = got[version]
        assert list(row) == SUMMARY_COLUMNS
        latency = np.concatenate([p.latency_ms for p in parts])
        errors = int(np.concatenate([p.error for p in parts]).sum())
        tasks = np.concatenate([p.task_completed for p in parts])
        cost = float(np.concatenate([p.cost_usd for p in parts]).sum())
        requests = latency.size
        tool_calls, tool_errors = total(parts, "tool_calls"), total(parts, "tool_errors")
        tokens = total(parts, "input_tokens") + total(parts, "output_tokens")
        assert (row["requests"], row["errors"]) == (requests, errors)
        assert row["error_rate"] == errors / requests
        assert row["latency_mean_ms"] == pytest.approx(latency.mean(), rel=1e-12)
        assert row["cost_usd"] == pytest.approx(cost, rel=1e-12)
        assert row["cost_per_request_usd"] == pytest.approx(cost / requests, rel=1e-12)
        assert row["tokens_per_request"] == tokens / requests
        quality = np.concatenate([p.quality for p in parts])
        assert row["quality_mean"] == pytest.approx(quality.mean(), rel=1e-12)
        assert row["task_completion_rate"] == tasks.sum() / tasks.size
        assert row["tool_error_rate"] == tool_errors / tool_calls
        assert row["llm_calls"] == total(parts, "llm_calls")
        assert row["tool_calls"] == tool_calls
        assert row["guardrail_blocks"] == total(parts, "guardrail_blocks")
        assert (row["first_window"], row["last_window"]) == (naive(windows[0]), naive(windows[-1]))
        buckets = merged_buckets(parts)
        for column, q in QUANTILES.items():
            assert row[column] == pytest.approx(quantile_from_buckets(buckets, q), rel=1e-12)
            exact = float(np.quantile(latency, q, method="inverted_cdf"))
            assert 1.0 <= exact <= 1e6  # inside the grid, where the error bound holds
            assert abs(row[column] / exact - 1.0) <= QUANTILE_MAX_RELATIVE_ERROR + 1e-12
    assert got["v2"]["latency_p95_ms"] > got["v1"]["latency_p95_ms"]


def test_latency_quantile_function_matches_python_at_every_edge(client: Client) -> None:
    rng = np.random.default_rng(7)
    histograms = [
        [1] + [0] * (LATENCY_BUCKET_COUNT - 1),  # everything under 1 ms
        [0] * (LATENCY_BUCKET_COUNT - 1) + [3],  # everything above 10^6 ms
        [2] + [0] * (LATENCY_BUCKET_COUNT - 2) + [2],
        *[[int(c) for c in rng.poisson(rng.random(LATENCY_BUCKET_COUNT) < 0.1)] for _ in range(12)],
    ]

    def quantile(buckets: list[int], q: float) -> float | None:
        result = client.query(
            "SELECT coalmine_latency_quantile_ms({b:Array(UInt64)}, {q:Float64})",
            parameters={"b": buckets, "q": q},
        )
        value: float | None = result.result_rows[0][0]
        return value

    for buckets in histograms:
        for q in (0.0, 0.001, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0):
            want = quantile_from_buckets(buckets, q)
            assert quantile(buckets, q) == pytest.approx(want, rel=1e-12), (buckets, q)
    assert quantile([0] * LATENCY_BUCKET_COUNT, 0.5) is None


def test_zero_denominators_give_null(client: Client, hour: datetime) -> None:
    start = hour + timedelta(minutes=30)
    empty = WindowStats.empty("null-bot", "v0", start, WINDOW_S, row_source(TOPIC, 0, 0))
    # Requests, but no tool call, task outcome, quality score or priced span.
    bare = WindowStats.from_arrays(
        agent="null-bot",
        version="v1",
        window_start=start,
        window_seconds=WINDOW_S,
        source=row_source(TOPIC, 0, 1),
        latency_ms=[120.0, 80.0],
    )
    client.insert(
        "coalmine.version_stats",
        [
            version_stats_row(WindowRow(s, TOPIC, 0, i, i + 1, False))
            for i, s in enumerate((empty, bare))
        ],
        column_names=list(VERSION_STATS_COLUMNS),
    )

    got = summary(client, "version_summary", "null-bot", start, start + timedelta(minutes=1))

    nulls = [
        "error_rate",
        "latency_p50_ms",
        "latency_p95_ms",
        "latency_p99_ms",
        "latency_mean_ms",
        "cost_per_request_usd",
        "tokens_per_request",
        "quality_mean",
        "task_completion_rate",
        "tool_error_rate",
    ]
    assert [got["v0"][c] for c in nulls] == [None] * len(nulls)
    assert (got["v0"]["requests"], got["v0"]["cost_usd"]) == (0, 0.0)
    bare_row = got["v1"]
    assert [c for c in nulls if bare_row[c] is None] == [
        "quality_mean",
        "task_completion_rate",
        "tool_error_rate",
    ]
    assert (bare_row["error_rate"], bare_row["latency_mean_ms"]) == (0.0, 100.0)
    assert (bare_row["cost_per_request_usd"], bare_row["tokens_per_request"]) == (0.0, 0.0)


# --- rollups --------------------------------------------------------------------------------


def totals(
    client: Client, table: str, period: str, histogram: str, agent: str
) -> dict[tuple[str, datetime], Row]:
    """Per (version, period start): the sum of every measure of ``agent``'s rows in ``table``."""
    measures = ", ".join(f"sum({name}) AS {name}" for name in [*COUNT_FIELDS, *SUM_FIELDS])
    rows = query(
        client,
        f"SELECT version, {period} AS period, {measures}, "
        f"{histogram}(latency_buckets) AS latency_buckets FROM coalmine.{table} "
        f"WHERE agent = '{agent}' GROUP BY version, period ORDER BY version, period",
    )
    return {(row.pop("version"), row.pop("period")): row for row in rows}


def assert_same_totals(
    got: dict[tuple[str, datetime], Row], want: dict[tuple[str, datetime], Row]
) -> None:
    assert list(got) == list(want)
    for key, row in want.items():
        for name in [*COUNT_FIELDS, "latency_buckets"]:
            assert got[key][name] == row[name], (key, name)
        for name in SUM_FIELDS:
            assert got[key][name] == pytest.approx(row[name], rel=1e-12, abs=1e-12), (key, name)


def test_rollups_add_up_to_the_base_table_per_minute_and_hour(
    client: Client, hour: datetime
) -> None:
    rng = np.random.default_rng(11)
    offsets = iter(range(10**6))
    parts = [
        make_part(
            rng,
            "rollup-bot",
            str(rng.choice(["v1", "v2"])),
            hour + timedelta(minutes=int(minute), seconds=WINDOW_S * int(rng.integers(0, 12))),
            partition=int(rng.integers(0, 4)),
            offset_from=next(offsets),
            requests=int(rng.poisson(5)),
            late=bool(rng.random() < 0.2),
        )
        for minute in rng.choice(180, 12, replace=False)  # 12 minutes of three hours
        for _ in range(6)
    ]
    rollups = (
        ("version_stats_1m", "minute", "toStartOfMinute(window_start)"),
        ("version_stats_1h", "hour", "toStartOfHour(window_start)"),
    )
    for table, _, _ in rollups:
        client.command(f"SYSTEM STOP MERGES coalmine.{table}")
    # Several inserts mixing the minutes: each adds its own rollup row to a minute.
    for batch in np.array_split(rng.permutation(len(parts)), 6):
        insert(client, [parts[i] for i in batch])

    for table, period, of_window in rollups:
        base = totals(client, "version_stats", of_window, "sumForEach", "rollup-bot")
        rows_per_key = (
            f"SELECT count() / uniqExact(version, {period}) AS n FROM coalmine.{table} "
            "WHERE agent = 'rollup-bot'"
        )
        assert query(client, rows_per_key)[0]["n"] > 1.5  # so the sums below do add rows up
        assert_same_totals(totals(client, table, period, "sumForEachMerge", "rollup-bot"), base)
        client.command(f"SYSTEM START MERGES coalmine.{table}")
        client.command(f"OPTIMIZE TABLE coalmine.{table} FINAL")
        assert query(client, rows_per_key) == [{"n": 1.0}]
        assert_same_totals(totals(client, table, period, "sumForEachMerge", "rollup-bot"), base)

    until = hour + timedelta(hours=3)
    by_window = summary(client, "version_summary", "rollup-bot", hour, until)
    by_hour = summary(client, "version_summary_hourly", "rollup-bot", hour, until)
    assert sorted(by_hour) == ["v1", "v2"]
    for key, row in by_hour.items():
        assert list(row) == SUMMARY_COLUMNS
        for column in SUMMARY_COLUMNS[2:-2]:
            assert row[column] == pytest.approx(by_window[key][column], rel=1e-12), column
        for column in ("first_window", "last_window"):  # the hours holding those windows
            assert row[column] == by_window[key][column].replace(minute=0, second=0)


def test_a_retried_insert_is_counted_once_in_the_rollups(client: Client, hour: datetime) -> None:
    rng = np.random.default_rng(3)
    start = hour + timedelta(minutes=45)
    parts = [
        make_part(rng, "retry-bot", "v1", start, partition=p, offset_from=0, requests=4)
        for p in (0, 1)
    ]
    insert(client, parts)
    insert(client, parts)  # the worker retrying a write it did not see succeed

    want = total(parts, "requests")
    for table in ("version_stats_1m", "version_stats_1h"):
        got = query(
            client, f"SELECT sum(requests) AS n FROM coalmine.{table} WHERE agent = 'retry-bot'"
        )
        assert got == [{"n": want}], table
    got_summary = summary(
        client, "version_summary", "retry-bot", start, start + timedelta(seconds=WINDOW_S)
    )
    assert got_summary["v1"]["requests"] == want


# --- sql/queries ----------------------------------------------------------------------------


QUERY_FILES = sorted(path.stem for path in (migrations_dir() / "queries").glob("*.sql"))


@pytest.mark.parametrize("name", QUERY_FILES)
def test_every_example_query_runs_read_only(client: Client, name: str) -> None:
    query(client, example_query(name))


def test_compare_versions_puts_each_version_next_to_the_busiest(client: Client) -> None:
    rng = np.random.default_rng(5)
    now = datetime.now(UTC).replace(microsecond=0)
    recent = now - timedelta(minutes=30)
    parts = {
        version: [
            make_part(
                rng,
                "compare-bot",
                version,
                recent + timedelta(seconds=WINDOW_S * k),
                partition=0,
                offset_from=100 * k,
                requests=requests,
                slowdown=slowdown,
                error_rate=error_rate,
            )
            for k in range(3)
        ]
        for version, requests, slowdown, error_rate in (
            ("v1", 40, 1.0, 0.05),
            ("v2", 10, 1.5, 0.2),
            ("v3", 5, 0.8, 0.1),
        )
    }
    # Two hours ago v3 was the busiest; that is outside the last hour.
    old = make_part(
        rng, "compare-bot", "v3", now - timedelta(hours=2), partition=1, offset_from=0, requests=900
    )
    insert(client, [*(p for ps in parts.values() for p in ps), old])

    rows = [
        r for r in query(client, example_query("compare_versions")) if r["agent"] == "compare-bot"
    ]

    assert [(r["version"], r["baseline"]) for r in rows] == [("v2", "v1"), ("v3", "v1")]
    base = parts["v1"]

    def figures(ps: list[Part]) -> dict[str, float]:
        requests = total(ps, "requests")
        buckets = merged_buckets(ps)
        return {
            "requests": requests,
            "error_rate": total(ps, "errors") / requests,
            "latency_p50_ms": quantile_from_buckets(buckets, 0.5),
            "latency_p95_ms": quantile_from_buckets(buckets, 0.95),
            "latency_p99_ms": quantile_from_buckets(buckets, 0.99),
            "cost_per_request_usd": total(ps, "cost_sum") / requests,
            "tokens_per_request": (total(ps, "input_tokens") + total(ps, "output_tokens"))
            / requests,
            "quality_mean": total(ps, "quality_sum") / total(ps, "quality_count"),
            "task_completion_rate": total(ps, "tasks_completed") / total(ps, "tasks_attempted"),
            "tool_error_rate": total(ps, "tool_errors") / total(ps, "tool_calls"),
        }

    b = figures(base)
    for row in rows:
        v = figures(parts[row["version"]])
        assert (row["requests"], row["baseline_requests"]) == (v["requests"], b["requests"])
        expected = {
            "error_rate": v["error_rate"],
            "baseline_error_rate": b["error_rate"],
            "error_rate_ratio": v["error_rate"] / b["error_rate"],
            "latency_p95_ms": v["latency_p95_ms"],
            "baseline_latency_p95_ms": b["latency_p95_ms"],
            "latency_p50_ratio": v["latency_p50_ms"] / b["latency_p50_ms"],
            "latency_p95_ratio": v["latency_p95_ms"] / b["latency_p95_ms"],
            "latency_p99_ratio": v["latency_p99_ms"] / b["latency_p99_ms"],
            "cost_per_request_usd": v["cost_per_request_usd"],
            "baseline_cost_per_request_usd": b["cost_per_request_usd"],
            "cost_per_request_ratio": v["cost_per_request_usd"] / b["cost_per_request_usd"],
            "tokens_per_request_ratio": v["tokens_per_request"] / b["tokens_per_request"],
            "quality_mean": v["quality_mean"],
            "baseline_quality_mean": b["quality_mean"],
            "quality_mean_ratio": v["quality_mean"] / b["quality_mean"],
            "task_completion_ratio": v["task_completion_rate"] / b["task_completion_rate"],
            "tool_error_rate_ratio": v["tool_error_rate"] / b["tool_error_rate"],
        }
        assert {k: row[k] for k in expected} == pytest.approx(expected, rel=1e-9)


def test_cost_per_day_sums_the_days_of_each_version(client: Client) -> None:
    rng = np.random.default_rng(9)
    now = datetime.now(UTC).replace(microsecond=0)
    moments = [now - timedelta(hours=h) for h in (1, 3, 30, 75)]
    parts = [
        make_part(
            rng,
            "cost-bot",
            version,
            at,
            partition=0,
            offset_from=i,
            requests=int(rng.integers(1, 20)),
        )
        for i, (version, at) in enumerate(itertools.product(("v1", "v2"), moments))
    ]
    too_old = make_part(
        rng, "cost-bot", "v1", now - timedelta(days=40), partition=0, offset_from=99, requests=50
    )
    insert(client, [*parts, too_old])

    rows = [r for r in query(client, example_query("cost_per_day")) if r["agent"] == "cost-bot"]

    want: dict[tuple[date, str], list[Part]] = {}
    for part in parts:
        want.setdefault((part.stats.window_start.date(), part.stats.version), []).append(part)
    assert [(r["day"], r["version"]) for r in rows] == sorted(want)
    for row in rows:
        ps = want[(row["day"], row["version"])]
        requests, cost = total(ps, "requests"), total(ps, "cost_sum")
        assert row["requests"] == requests
        assert row["cost_usd"] == pytest.approx(cost, rel=1e-12)
        assert row["cost_per_request_usd"] == pytest.approx(cost / requests, rel=1e-12)
        assert (row["input_tokens"], row["output_tokens"]) == (
            total(ps, "input_tokens"),
            total(ps, "output_tokens"),
        )


def span(
    agent: str, version: str, kind: str, at: datetime, duration_ms: float, **fields: Any
) -> Row:
    """A coalmine.spans row by column name (columns not named keep their defaults)."""
    return {
        "event_id": uuid.uuid4(),
        "trace_id": uuid.uuid4().hex,
        "span_id": uuid.uuid4().hex[:16],
        "agent": agent,
        "version": version,
        "environment": "test",
        "kind": kind,
        "name": fields.pop("name", kind),
        "start_time": at,
        "end_time": at + timedelta(milliseconds=duration_ms),
        "duration_ms": duration_ms,
        "status": "error" if fields.get("error_type") else "ok",
        "cost_source": "unpriced",
        **fields,
    }


def insert_spans(client: Client, rows: Sequence[Row]) -> None:
    columns = sorted({name for row in rows for name in row})
    defaults = {"error_type": "", "error_message": "", "tool_name": ""}
    client.insert(
        "coalmine.spans",
        [[row.get(c, defaults.get(c)) for c in columns] for row in rows],
        column_names=columns,
    )


def test_slowest_tools_gives_duration_quantiles_and_error_rate_per_tool(client: Client) -> None:
    rng = np.random.default_rng(13)
    now = datetime.now(UTC)
    durations = {
        "search": rng.lognormal(3.0, 0.5, 300),
        "crm": rng.lognormal(6.0, 0.7, 200),
        "adhoc": rng.lognormal(4.5, 0.3, 50),
    }
    failures = {
        tool: rng.random(d.size) < rate
        for (tool, d), rate in zip(durations.items(), (0.01, 0.2, 0.0), strict=True)
    }
    rows = [
        span(
            "tools-bot",
            "v1",
            "tool",
            now - timedelta(minutes=int(rng.integers(1, 600))),
            float(ms),
            name=tool if tool == "adhoc" else f"call-{tool}",
            tool_name="" if tool == "adhoc" else tool,
            error_type="TimeoutError" if failed else "",
        )
        for tool in durations
        for ms, failed in zip(durations[tool], failures[tool], strict=True)
    ]
    old = span("tools-bot", "v1", "tool", now - timedelta(days=2), 1e6, tool_name="crm")
    request = span("tools-bot", "v1", "request", now - timedelta(minutes=5), 1e6)
    insert_spans(client, [*rows, old, request])

    got = [r for r in query(client, example_query("slowest_tools")) if r["agent"] == "tools-bot"]

    assert [r["tool"] for r in got] == ["crm", "adhoc", "search"]  # slowest p95 first
    for row in got:
        values, failed = durations[row["tool"]], failures[row["tool"]]
        assert (row["calls"], row["error_rate"]) == (values.size, failed.sum() / values.size)
        for column, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
            # quantile() keeps every value below 8,192 per group and interpolates like numpy.
            assert row[column] == pytest.approx(float(np.quantile(values, q)), rel=1e-9)


def test_version_error_types_counts_each_type_with_its_latest_message(client: Client) -> None:
    now = datetime.now(UTC).replace(microsecond=0)

    def failed(version: str, kind: str, minutes_ago: int, error_type: str, message: str) -> Row:
        at = now - timedelta(minutes=minutes_ago)
        return span(
            "errors-bot", version, kind, at, 100.0, error_type=error_type, error_message=message
        )

    rows = [
        failed("v2", "request", 50, "TimeoutError", "tool lookup timed out"),
        failed("v2", "request", 20, "TimeoutError", "llm timed out"),
        failed("v2", "request", 35, "ValueError", "bad order id"),
        failed("v2", "tool", 50, "TimeoutError", "lookup timed out"),
        failed("v1", "request", 15, "RateLimitError", "429"),
        failed("v2", "request", 60 * 30, "OldError", "yesterday"),  # before the last 24 hours
        span("errors-bot", "v2", "request", now - timedelta(minutes=10), 200.0),
    ]
    insert_spans(client, rows)

    got = [
        r for r in query(client, example_query("version_error_types")) if r["agent"] == "errors-bot"
    ]

    assert [(r["version"], r["kind"], r["error_type"], r["errors"]) for r in got] == [
        ("v1", "request", "RateLimitError", 1),
        ("v2", "request", "TimeoutError", 2),
        ("v2", "request", "ValueError", 1),
        ("v2", "tool", "TimeoutError", 1),
    ]
    timeouts = got[1]
    first, last = now - timedelta(minutes=50), now - timedelta(minutes=20)
    assert (timeouts["first_seen"], timeouts["last_seen"]) == (naive(first), naive(last))
    assert timeouts["latest_message"] == "llm timed out"


def test_the_query_files_have_a_header_saying_what_they_answer() -> None:
    for path in sorted((migrations_dir() / "queries").glob("*.sql")):
        assert path.read_text(encoding="utf-8").startswith("-- "), path.name
