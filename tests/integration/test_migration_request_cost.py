"""Migration 0011 on a database that already holds windows: old rows read no priced request,
the rollups sum the new columns from then on, and applying it again changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client

from schemas.window_stats import WindowStats, log_cost
from streams.ingest.aggregate import VERSION_STATS_COLUMNS, WindowRow, version_stats_row
from streams.storage.clickhouse import load_migrations

pytestmark = pytest.mark.integration

REQUEST_COST = 11


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    path = tmp_path / "chdb"
    path.mkdir()
    chdb = clickhouse_connect.get_client(dsn=f"chdb://{path}")
    yield chdb
    chdb.close()  # frees the process's one chDB slot for other tests


def apply(client: Client, *, before: bool) -> None:
    """The migrations before 0011 (``before``), or 0011 itself."""
    for migration in load_migrations():
        if (migration.version < REQUEST_COST) == before and migration.version <= REQUEST_COST:
            for statement in migration.statements():
                client.command(statement)


def row(start: datetime, offset: int, request_costs: list[float]) -> WindowRow:
    stats = WindowStats.from_arrays(
        agent="bot",
        version="v1",
        window_start=start,
        window_seconds=5,
        source=f"coalmine.traces/0@{offset}",
        latency_ms=[100.0, 200.0],
        cost_usd=[0.01, 0.02],
        request_cost_usd=request_costs,
    )
    return WindowRow(stats, "coalmine.traces", 0, offset, offset + 2, False)


def test_old_windows_read_no_priced_request_and_new_ones_roll_up(client: Client) -> None:
    apply(client, before=True)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    old = version_stats_row(row(start, 0, []))
    old_columns = [c for c in VERSION_STATS_COLUMNS if not c.startswith("request_")]
    assert len(old_columns) == len(VERSION_STATS_COLUMNS) - 4
    values = dict(zip(VERSION_STATS_COLUMNS, old, strict=True))
    client.insert(
        "coalmine.version_stats", [[values[c] for c in old_columns]], column_names=old_columns
    )

    apply(client, before=False)
    apply(client, before=False)  # idempotent, as `coalmine migrate` may run it again
    new = row(start + timedelta(seconds=5), 2, [0.03, 0.5])
    client.insert(
        "coalmine.version_stats",
        [version_stats_row(new)],
        column_names=list(VERSION_STATS_COLUMNS),
    )

    sums = (
        "sum(requests), sum(request_cost_count), sum(request_cost_sum), sum(request_log_cost_sum)"
    )
    want = (4, 2, pytest.approx(0.53), pytest.approx(log_cost(0.03) + log_cost(0.5)))
    # The rollups hold the old row's requests (summed before the columns existed) and the
    # new row's priced requests.
    for table in ("version_stats", "version_stats_1m", "version_stats_1h"):
        got = client.query(f"SELECT {sums} FROM coalmine.{table}").result_rows[0]
        assert got == want, table
    rows = client.query(
        "SELECT offset_from, request_cost_count FROM coalmine.version_stats ORDER BY offset_from"
    ).result_rows
    assert rows == [(0, 0), (2, 2)]
