"""Migrations that add measures to coalmine.version_stats (0011: cost per request, 0017:
approvals asked), each on a database that already holds windows: old rows read 0, the
rollups sum the new columns from then on, and applying it again changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client

from schemas.window_stats import WindowStats, log_cost
from streams.ingest.aggregate import VERSION_STATS_COLUMNS, WindowRow, version_stats_row
from streams.storage.clickhouse import load_migrations

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class NewMeasures:
    """A migration adding ``columns``; ``values`` are the new row's, ``sums`` what the base
    table and both rollups then hold (the old row adds 0)."""

    migration: int
    columns: tuple[str, ...]
    values: dict[str, Any]
    sums: tuple[Any, ...]


REQUEST_COST = NewMeasures(
    11,
    ("request_cost_count", "request_cost_sum", "request_log_cost_sum", "request_log_cost_sumsq"),
    {"request_cost_usd": [0.03, 0.5]},
    (
        2,
        pytest.approx(0.53),
        pytest.approx(log_cost(0.03) + log_cost(0.5)),
        pytest.approx(log_cost(0.03) ** 2 + log_cost(0.5) ** 2),
    ),
)
APPROVALS_ASKED = NewMeasures(17, ("approvals_asked",), {"approvals_asked": 3}, (3,))
LATER = (REQUEST_COST, APPROVALS_ASKED)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[Client]:
    path = tmp_path / "chdb"
    path.mkdir()
    chdb = clickhouse_connect.get_client(dsn=f"chdb://{path}")
    yield chdb
    chdb.close()  # frees the process's one chDB slot for other tests


def apply(client: Client, first: int, last: int) -> None:
    """The migrations ``first`` to ``last``, in order."""
    for migration in load_migrations():
        if first <= migration.version <= last:
            for statement in migration.statements():
                client.command(statement)


def columns_after(migration: int) -> list[str]:
    """The columns of version_stats once ``migration`` is applied (not those added later)."""
    later = {c for m in LATER if m.migration > migration for c in m.columns}
    return [c for c in VERSION_STATS_COLUMNS if c not in later]


def insert(client: Client, row: WindowRow, columns: list[str]) -> None:
    values = dict(zip(VERSION_STATS_COLUMNS, version_stats_row(row), strict=True))
    client.insert("coalmine.version_stats", [[values[c] for c in columns]], column_names=columns)


def window(start: datetime, offset: int, **values: Any) -> WindowRow:
    stats = WindowStats.from_arrays(
        agent="bot",
        version="v1",
        window_start=start,
        window_seconds=5,
        source=f"coalmine.traces/0@{offset}",
        latency_ms=[100.0, 200.0],
        cost_usd=[0.01, 0.02],
        request_cost_usd=values.pop("request_cost_usd", None),
    )
    return WindowRow(
        stats.model_copy(update=values), "coalmine.traces", 0, offset, offset + 2, False
    )


@pytest.mark.parametrize("added", LATER, ids=lambda m: f"{m.migration:04d}")
def test_old_windows_read_zero_and_new_ones_roll_up(client: Client, added: NewMeasures) -> None:
    apply(client, 0, added.migration - 1)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    insert(client, window(start, 0), columns_after(added.migration - 1))

    apply(client, added.migration, added.migration)
    apply(client, added.migration, added.migration)  # idempotent: `coalmine migrate` may rerun
    insert(
        client,
        window(start + timedelta(seconds=5), 2, **added.values),
        columns_after(added.migration),
    )

    sums = ", ".join(f"sum({c})" for c in ("requests", *added.columns))
    # The rollups hold the old row's requests (summed before the columns existed) and the
    # new row's new measures.
    for table in ("version_stats", "version_stats_1m", "version_stats_1h"):
        got = client.query(f"SELECT {sums} FROM coalmine.{table}").result_rows[0]
        assert got == (4, *added.sums), table
    first = added.columns[0]
    rows = client.query(
        f"SELECT offset_from, {first} FROM coalmine.version_stats ORDER BY offset_from"
    ).result_rows
    assert rows == [(0, 0), (2, added.sums[0])]
