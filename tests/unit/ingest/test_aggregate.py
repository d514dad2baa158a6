"""Map-side windows: what a window counts, when it is emitted, and exactness across crashes."""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.window_stats import LATENCY_BUCKET_COUNT, WindowStats, latency_histogram, log_cost
from streams.ingest.aggregate import (
    VERSION_STATS_COLUMNS,
    WindowAccumulator,
    WindowAggregator,
    WindowKey,
    WindowRow,
    is_priced,
    partitions_of,
    request_costs,
    version_stats_row,
    window_start_of,
)
from streams.ingest.route import SpanRow, position

EPOCH = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
T0 = EPOCH.timestamp()
TOPIC = "coalmine.traces"


def span(**values: Any) -> SpanRow:
    """A spans row with defaults for everything the test does not care about."""
    row: dict[str, Any] = dict.fromkeys(SpanRow._fields, "")
    row.update(
        event_id=uuid.uuid4(),
        agent="bot",
        version="v1",
        kind="request",
        end_time=EPOCH,
        duration_ms=100.0,
        status="ok",
        input_tokens=0,
        output_tokens=0,
        cost_usd=0.0,
        cost_source="price_table",
        task_completed=None,
        quality_score=None,
        attributes={},
    )
    row.update(values)
    return SpanRow(**row)


def assert_same_stats(got: WindowStats, want: WindowStats) -> None:
    """Counts and histogram exactly, float sums up to rounding."""
    got_values, want_values = got.model_dump(), want.model_dump()
    for name, value in want_values.items():
        if isinstance(value, float):
            assert got_values[name] == pytest.approx(value, rel=1e-9, abs=1e-9), name
        else:
            assert got_values[name] == value, name


def test_window_start_is_the_floor_of_the_end_time() -> None:
    assert window_start_of(EPOCH, 5) == T0
    assert window_start_of(EPOCH + timedelta(seconds=4.999999), 5) == T0
    assert window_start_of(EPOCH + timedelta(seconds=5), 5) == T0 + 5
    assert window_start_of(EPOCH - timedelta(microseconds=1), 5) == T0 - 5


def test_a_window_counts_requests_tools_llm_calls_tokens_cost_quality_and_approvals() -> None:
    asked_twice = {"coalmine.approvals_asked": "2", "ticket": "7"}
    rows = [
        span(duration_ms=120.0, task_completed=True, quality_score=0.5, attributes=asked_twice),
        span(duration_ms=900.0, status="error", task_completed=False),
        span(duration_ms=0.4, attributes={"coalmine.approvals_asked": "1"}),
        span(kind="tool", status="error", duration_ms=5000.0),
        span(kind="tool"),
        span(kind="llm", input_tokens=1000, output_tokens=50, cost_usd=0.01),
        span(kind="llm", cost_usd=0.02, cost_source="reported"),
        span(kind="llm", input_tokens=7, cost_source="unpriced"),
        span(kind="guardrail", status="error"),
        span(kind="guardrail"),
        span(kind="eval", quality_score=0.75),
    ]
    sums = WindowAccumulator()
    for row in rows:
        sums.add(row)
    stats = sums.to_stats(("bot", "v1", int(T0)), 5, "s")
    costs = [0.01, 0.02]
    expected = WindowStats(
        agent="bot",
        version="v1",
        window_start=EPOCH,
        window_seconds=5,
        source="s",
        requests=3,
        errors=1,
        tasks_attempted=2,
        tasks_completed=1,
        tool_calls=2,
        tool_errors=1,
        llm_calls=3,
        guardrail_blocks=1,
        input_tokens=1007,
        output_tokens=50,
        cost_count=2,
        cost_sum=sum(costs),
        cost_sumsq=sum(c * c for c in costs),
        log_cost_sum=sum(log_cost(c) for c in costs),
        log_cost_sumsq=sum(log_cost(c) ** 2 for c in costs),
        quality_count=2,
        quality_sum=1.25,
        quality_sumsq=0.25 + 0.5625,
        approvals_asked=3,
        latency_sum_ms=1020.4,
        latency_buckets=latency_histogram([120.0, 900.0, 0.4]),
    )
    assert_same_stats(stats, expected)
    assert len(stats.latency_buckets) == LATENCY_BUCKET_COUNT


def test_priced_spans_have_a_reported_cost_or_tokens_to_price() -> None:
    assert is_priced(span(cost_source="reported"))
    assert is_priced(span(cost_source="price_table", output_tokens=1))
    assert not is_priced(span(cost_source="price_table"))
    assert not is_priced(span(cost_source="unpriced", input_tokens=5))


def test_a_window_is_emitted_after_its_end_plus_the_allowed_lateness() -> None:
    windows: WindowAggregator[int] = WindowAggregator(TOPIC, 5, 2.0)
    windows.load_coverage(0, {})
    assert windows.add(0, 10, span(end_time=EPOCH + timedelta(seconds=1)), 10, T0 + 1)
    assert windows.add(0, 11, span(end_time=EPOCH + timedelta(seconds=6)), 11, T0 + 6)
    assert windows.due(T0 + 6.999).rows == []
    first = windows.due(T0 + 7)
    assert [r.stats.window_start for r in first.rows] == [EPOCH]
    assert first.tokens == [10]
    (row,) = first.rows
    assert (row.partition, row.offset_from, row.offset_until, row.late) == (0, 10, 11, False)
    assert row.stats.source == f"{TOPIC}/0@10"
    assert windows.open_windows == 1


def test_a_span_for_an_emitted_window_goes_into_a_correction_row() -> None:
    windows: WindowAggregator[int] = WindowAggregator(TOPIC, 5, 2.0)
    windows.load_coverage(3, {})
    windows.add(3, 0, span(), 0, T0 + 1)
    assert len(windows.due(T0 + 8).rows) == 1
    windows.add(3, 1, span(kind="tool"), 1, T0 + 9)
    windows.add(3, 2, span(status="error"), 2, T0 + 11)
    # Corrections gather until the next close time of any window: 10 s + 2 s lateness.
    assert windows.due(T0 + 11.9).rows == []
    correction = windows.due(T0 + 12)
    (row,) = correction.rows
    assert row.late and (row.offset_from, row.offset_until) == (1, 3)
    assert (row.stats.requests, row.stats.errors, row.stats.tool_calls) == (1, 1, 1)
    assert correction.tokens == [1, 2]


def test_spans_below_the_stored_coverage_are_not_counted_again() -> None:
    windows: WindowAggregator[int] = WindowAggregator(TOPIC, 5, 2.0)
    key: WindowKey = ("bot", "v1", int(T0))
    windows.load_coverage(1, {key: 8})
    assert not windows.add(1, 7, span(), 7, T0 + 1)
    assert windows.add(1, 8, span(), 8, T0 + 1)
    assert windows.add(1, 5, span(version="v2"), 5, T0 + 1)  # another window: not covered


def test_forget_drops_open_windows_and_coverage() -> None:
    windows: WindowAggregator[int] = WindowAggregator(TOPIC, 5, 2.0)
    windows.load_coverage(0, {})
    windows.add(0, 0, span(), 0, T0)
    windows.forget()
    assert windows.open_windows == 0 and not windows.has_coverage(0)
    assert windows.due(T0 + 100).rows == []


def test_bad_window_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="window_seconds"):
        WindowAggregator(TOPIC, 0, 1.0)
    with pytest.raises(ValueError, match="allowed_lateness_s"):
        WindowAggregator(TOPIC, 5, -1.0)


def test_partitions_of_gives_the_lowest_offset_per_partition() -> None:
    assert partitions_of([(0, 5), (1, 9), (0, 3), (1, 12)]) == {0: 3, 1: 9}


def at(offset: int, index: int, trace: str = "t1", partition: int = 0, **values: Any) -> SpanRow:
    """A span of ``trace`` at ``index`` in the message at (``partition``, ``offset``)."""
    return span(
        trace_id=trace, kafka_partition=partition, kafka_offset=offset, kafka_index=index, **values
    )


def llm(offset: int, index: int, cost: float, trace: str = "t1", partition: int = 0) -> SpanRow:
    return at(offset, index, trace, partition, kind="llm", cost_usd=cost, cost_source="reported")


def test_a_request_costs_the_priced_spans_of_its_trace_in_its_message() -> None:
    rows = [
        # message 10: two traces batched together, each a request with its llm calls
        llm(10, 0, 0.01),
        llm(10, 1, 0.02),
        at(10, 2, kind="tool"),
        at(10, 3),
        llm(10, 4, 0.5, trace="t2"),
        at(10, 5, trace="t2"),
        # message 11: a trace whose spans priced only by tokens, one unpriced
        at(11, 0, "t3", kind="llm", input_tokens=10, cost_usd=0.003),
        at(11, 1, "t3", kind="llm", input_tokens=7, cost_usd=0.0, cost_source="unpriced"),
        at(11, 2, "t3"),
        # message 12: a request without a priced span is not a priced request
        at(12, 0, "t4", kind="tool"),
        at(12, 1, "t4"),
        # the same offset on another partition is another message
        llm(10, 0, 0.04, trace="t1", partition=1),
        at(10, 1, "t1", partition=1),
    ]
    assert request_costs(rows) == {
        (0, 10, 3): pytest.approx(0.03),
        (0, 10, 5): 0.5,
        (0, 11, 2): 0.003,
        (1, 10, 1): 0.04,
    }


def test_spans_that_arrive_apart_from_their_request_count_per_span_only() -> None:
    """A trace split over two messages (more spans than a message holds): the spans before
    the request's message are in no request's total, but in the per-span sums."""
    first = [llm(20, i, 0.01) for i in range(3)]
    second = [llm(21, 0, 0.01), at(21, 1)]
    alone = [llm(22, 0, 0.2, trace="t9"), at(23, 0, "t9")]  # one span per message
    rows = [*first, *second, *alone]
    costs = request_costs(rows)
    assert costs == {(0, 21, 1): 0.01}
    sums = WindowAccumulator()
    for row in rows:
        sums.add(row, costs.get(position(row)))
    stats = sums.to_stats(("bot", "v1", int(T0)), 5, "s")
    assert (stats.requests, stats.cost_count, stats.request_cost_count) == (2, 5, 1)
    assert stats.cost_sum == pytest.approx(0.24)
    assert stats.request_cost_sum == 0.01
    assert stats.request_log_cost_sum == log_cost(0.01)
    assert stats.request_log_cost_sumsq == log_cost(0.01) ** 2


def test_a_looping_request_costs_more_while_its_spans_cost_the_same() -> None:
    """Twice the llm calls at the same price per call: the per-span mean stays, the
    per-request mean moves by ln 2."""

    def window(calls: int) -> WindowStats:
        rows = []
        for offset in range(4):
            rows += [llm(offset, i, 0.01) for i in range(calls)] + [at(offset, calls)]
        costs = request_costs(rows)
        sums = WindowAccumulator()
        for row in rows:
            sums.add(row, costs.get(position(row)))
        return sums.to_stats(("bot", "v1", int(T0)), 5, "s")

    once, twice = window(1), window(2)
    assert once.log_cost_sum / once.cost_count == pytest.approx(
        twice.log_cost_sum / twice.cost_count, rel=1e-12
    )
    per_request = [s.request_log_cost_sum / s.request_cost_count for s in (once, twice)]
    assert per_request[1] - per_request[0] == pytest.approx(math.log(2), rel=1e-4)


def test_a_trace_with_two_request_spans_in_one_message_counts_its_total_once() -> None:
    """A nested agent's request span, then the root's, which ends last: the root has it."""
    rows = [llm(30, 0, 0.01), at(30, 1), llm(30, 2, 0.02), at(30, 3)]
    assert request_costs(rows) == {(0, 30, 3): 0.03}
    assert request_costs(list(reversed(rows))) == {(0, 30, 3): 0.03}


def test_a_version_stats_row_follows_the_table_columns() -> None:
    stats = WindowStats.from_arrays(
        agent="bot",
        version="v1",
        window_start=EPOCH,
        window_seconds=5,
        source="s",
        latency_ms=[10.0, 20.0],
        error=[False, True],
    )
    row = WindowRow(stats, TOPIC, 2, 100, 140, True)
    values = dict(zip(VERSION_STATS_COLUMNS, version_stats_row(row), strict=True))
    assert (values["kafka_topic"], values["kafka_partition"]) == (TOPIC, 2)
    assert (values["offset_from"], values["offset_until"], values["late"]) == (100, 140, True)
    assert (values["requests"], values["errors"], values["window_start"]) == (2, 1, EPOCH)
    assert values["latency_buckets"] == stats.latency_buckets


# --- exactness across crashes: a model of the worker, the store and Kafka's commits -------


@dataclass
class Store:
    """The version_stats table: rows that were stored."""

    rows: list[WindowRow] = field(default_factory=list)

    def coverage(self, partition: int, lowest: int) -> dict[WindowKey, int]:
        """What ``VersionStatsWriter.coverage`` returns for one partition."""
        covered: dict[WindowKey, int] = {}
        for row in self.rows:
            if row.partition == partition and row.offset_until > lowest:
                start = int(row.stats.window_start.timestamp())
                key = (row.stats.agent, row.stats.version, start)
                covered[key] = max(covered.get(key, 0), row.offset_until)
        return covered


def totals(rows: Sequence[WindowRow]) -> dict[WindowKey, WindowStats]:
    merged: dict[WindowKey, WindowStats] = {}
    for row in rows:
        s = row.stats
        key = (s.agent, s.version, int(s.window_start.timestamp()))
        neutral = WindowStats.empty(s.agent, s.version, s.window_start, s.window_seconds, "x")
        merged[key] = merged.get(key, neutral).merge(s.model_copy(update={"source": "x"}))
    return merged


Message = Sequence[tuple[Any, ...]]
"""The spans one Kafka message carries: (end_time, agent, version, values) each."""


def message_rows(message: Message, offset: int) -> list[SpanRow]:
    """The span rows of the message at ``offset`` of partition 0."""
    return [
        span(
            agent=agent,
            version=version,
            end_time=end,
            kafka_offset=offset,
            kafka_index=index,
            **values,
        )
        for index, (end, agent, version, values) in enumerate(message)
    ]


def truth(stream: Sequence[Message], window_seconds: int) -> dict[WindowKey, WindowStats]:
    by_window: dict[WindowKey, WindowAccumulator] = {}
    for offset, message in enumerate(stream):
        rows = message_rows(message, offset)
        costs = request_costs(rows)
        for row in rows:
            key = (row.agent, row.version, window_start_of(row.end_time, window_seconds))
            by_window.setdefault(key, WindowAccumulator()).add(row, costs.get(position(row)))
    return {key: acc.to_stats(key, window_seconds, "x") for key, acc in by_window.items()}


def run_with_crashes(
    stream: Sequence[Message], rng: random.Random, crash_rate: float
) -> list[WindowRow]:
    """Feed one partition's messages (each of one span or a batch) through workers that
    crash at random points: before a flush is stored, after it is stored but before its
    messages are acknowledged, or between batches. Returns every stored row."""
    store = Store()
    committed = 0  # Kafka's committed offset: every offset below it was acknowledged
    acked: set[int] = set()
    now = T0
    while committed < len(stream):
        windows: WindowAggregator[int] = WindowAggregator(TOPIC, 5, 1.0)
        windows.load_coverage(0, store.coverage(0, committed))
        crashed = False
        offset = committed
        while not crashed and offset < len(stream):
            held = False
            rows = message_rows(stream[offset], offset)
            costs = request_costs(rows)
            for row in rows:
                now = max(now, row.end_time.timestamp()) + rng.uniform(0.0, 0.3)
                held |= windows.add(
                    0, offset, row, offset, now, request_cost=costs.get(position(row))
                )
            if not held:
                acked.add(offset)
            offset += 1
            if rng.random() < 0.2 or offset == len(stream):
                flush = windows.due(now + (100.0 if offset == len(stream) else 0.0))
                fate = rng.random()
                if flush.rows and fate < crash_rate:
                    crashed = True  # died before the insert landed
                    continue
                store.rows.extend(flush.rows)
                if flush.rows and fate < 2 * crash_rate:
                    crashed = True  # died after the insert, before acknowledging
                    continue
                acked.update(flush.tokens)
            while committed in acked:
                committed += 1
            if rng.random() < crash_rate / 4:
                crashed = True
    return store.rows


span_values = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["request", "request", "tool", "llm", "guardrail", "eval"]),
        "status": st.sampled_from(["ok", "ok", "ok", "error"]),
        "duration_ms": st.floats(0.0, 1e5, allow_nan=False),
        "input_tokens": st.integers(0, 5000),
        "output_tokens": st.integers(0, 500),
        "cost_usd": st.floats(0.0, 2.0, allow_nan=False),
        "task_completed": st.none() | st.booleans(),
        "quality_score": st.none() | st.floats(0.0, 1.0),
        "trace_id": st.sampled_from(["a", "b", "c"]),
    }
)
messages = st.lists(
    st.tuples(
        # mostly in order, with stragglers up to 20 s behind the newest
        st.floats(0.0, 20.0),
        st.sampled_from(["bot", "helper"]),
        st.sampled_from(["v1", "v2"]),
        span_values,
    ),
    min_size=1,
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(
    messages,
    st.lists(st.integers(1, 6), min_size=1),
    st.integers(0, 2**32 - 1),
    st.sampled_from([0.0, 0.1, 0.3]),
)
def test_stored_rows_add_up_to_every_span_once_whatever_the_crashes(
    drafts: list[tuple[float, str, str, dict[str, Any]]],
    sizes: list[int],
    seed: int,
    crash_rate: float,
) -> None:
    """Messages of one span and batches of up to six (spans of one batch may fall in
    several windows, as stragglers do; a trace's spans may share a message or not, so
    request totals come out whole, partial or absent)."""
    spans = []
    clock = 0.0
    for behind, agent, version, values in drafts:
        clock += 0.25
        end = EPOCH + timedelta(seconds=max(0.0, clock - behind))
        spans.append((end, agent, version, values))
    stream: list[Message] = []
    while spans:
        size = sizes[len(stream) % len(sizes)]
        stream.append(spans[:size])
        spans = spans[size:]
    stored = run_with_crashes(stream, random.Random(seed), crash_rate)
    expected, got = truth(stream, 5), totals(stored)
    assert got.keys() == expected.keys()
    for key, stats in expected.items():
        assert_same_stats(got[key], stats)
    # A row re-made after a crash replaces one that was never stored, so identities stay
    # unique: ReplacingMergeTree never folds two real rows into one.
    identities = [r.stats.source for r in stored]  # a row begins at one span: its own
    assert len(identities) == len(set(identities))
