"""How the span sink splits an insert: by day for ClickHouse's partition limit, and in halves
until the rows whose values ClickHouse refuses stand alone. Pure: the insert is a function."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from streams.ingest.route import SpanRow, position
from streams.storage.clickhouse import chunks_by_day, isolate_refused_rows

START = datetime(2026, 1, 1, tzinfo=UTC)


def row(offset: int) -> SpanRow:
    values: dict[str, Any] = dict.fromkeys(SpanRow._fields)
    values.update(kafka_partition=0, kafka_offset=offset, kafka_index=0)
    return SpanRow(**values)


class RefusingInsert:
    """Refuses any insert holding one of ``bad`` offsets, as ClickHouse refuses a block."""

    def __init__(self, bad: set[int], error: Exception) -> None:
        self.bad, self.error = bad, error
        self.stored: list[int] = []
        self.calls = 0

    def __call__(self, rows: Sequence[SpanRow]) -> None:
        self.calls += 1
        if any(r.kafka_offset in self.bad for r in rows):
            raise self.error
        self.stored.extend(r.kafka_offset for r in rows)


def test_rows_with_refused_values_are_isolated_and_the_rest_stored() -> None:
    insert = RefusingInsert({3, 17}, DatabaseError("Code: 321. Value out of range"))
    refused = isolate_refused_rows([row(i) for i in range(32)], insert, position, "span")
    assert sorted(refused) == [(0, 3, 0), (0, 17, 0)]
    assert "Code: 321" in refused[(0, 3, 0)]
    assert sorted(insert.stored) == [i for i in range(32) if i not in {3, 17}]
    assert insert.calls <= 2 * 2 * 6  # two bad rows: about two paths of log2(32) halvings


def test_a_failure_that_is_not_about_the_rows_is_raised_for_a_retry() -> None:
    insert = RefusingInsert({3}, OperationalError("connection reset"))
    with pytest.raises(OperationalError):
        isolate_refused_rows([row(i) for i in range(8)], insert, position, "span")
    assert insert.stored == []


def test_a_clean_insert_is_one_call() -> None:
    insert = RefusingInsert(set(), DatabaseError("unused"))
    assert isolate_refused_rows([row(i) for i in range(8)], insert, position, "span") == {}
    assert insert.calls == 1


def test_chunks_touch_at_most_the_allowed_days_and_keep_every_row() -> None:
    times = [START + timedelta(days=d % 250, hours=d % 7) for d in range(600)]
    chunks = chunks_by_day(times, lambda t: t, days=100)
    assert [len({t.date() for t in chunk}) for chunk in chunks] == [100, 100, 50]
    assert sorted(t for chunk in chunks for t in chunk) == sorted(times)
    assert chunks_by_day([], lambda t: t) == []
