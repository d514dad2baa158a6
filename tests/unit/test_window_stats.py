"""WindowStats: the mergeable aggregate, its latency grid and quantiles."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.window_stats import (
    LATENCY_BUCKET_COUNT,
    LATENCY_BUCKET_RATIO,
    LATENCY_MAX_MS,
    LATENCY_MIN_MS,
    LOG_COST_EPSILON_USD,
    MERGED_SOURCE,
    QUANTILE_MAX_RELATIVE_ERROR,
    SUM_FIELDS,
    WindowStats,
    bucket_lower_ms,
    bucket_upper_ms,
    latency_bucket_index,
    latency_bucket_indices,
    latency_histogram,
    log_cost,
    quantile_from_buckets,
)

START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@st.composite
def partials(draw: st.DrawFn, source: str | None = None) -> WindowStats:
    """A consistent partial of one fixed window, as a worker would emit it."""
    latencies = draw(st.lists(st.floats(0.0, 2e6, allow_nan=False), max_size=30))
    requests = len(latencies)
    costs = draw(st.lists(st.floats(0.0, 50.0), max_size=2 * requests))
    request_costs = draw(st.lists(st.floats(0.0, 100.0), max_size=requests))
    scores = draw(st.lists(st.floats(0.0, 1.0), max_size=20))
    attempted = draw(st.integers(0, 40))
    tool_calls = draw(st.integers(0, 40))
    return WindowStats.from_arrays(
        agent="agent",
        version="v1",
        window_start=START,
        window_seconds=5,
        source=source or draw(st.sampled_from(["w1", "w2", "w3"])),
        latency_ms=latencies,
        error=[draw(st.booleans()) for _ in range(requests)],
        cost_usd=costs,
        request_cost_usd=request_costs,
        quality=scores,
        task_completed=[draw(st.booleans()) for _ in range(attempted)],
        tool_calls=tool_calls,
        tool_errors=draw(st.integers(0, tool_calls)),
        llm_calls=draw(st.integers(0, 100)),
        guardrail_blocks=draw(st.integers(0, 5)),
        input_tokens=draw(st.integers(0, 10**6)),
        output_tokens=draw(st.integers(0, 10**6)),
    )


def assert_same(a: WindowStats, b: WindowStats) -> None:
    """Equal: integer fields exactly, float sums up to rounding."""
    da, db = a.model_dump(), b.model_dump()
    for name in SUM_FIELDS:
        assert math.isclose(da.pop(name), db.pop(name), rel_tol=1e-12, abs_tol=1e-9), name
    assert da == db


@settings(max_examples=150, deadline=None)
@given(partials(), partials(), partials())
def test_merge_is_associative(a: WindowStats, b: WindowStats, c: WindowStats) -> None:
    assert_same(a.merge(b).merge(c), a.merge(b.merge(c)))


@settings(max_examples=150, deadline=None)
@given(partials(), partials())
def test_merge_is_commutative_exactly(a: WindowStats, b: WindowStats) -> None:
    assert a.merge(b) == b.merge(a)


@settings(max_examples=100, deadline=None)
@given(partials())
def test_empty_of_the_same_source_is_an_exact_identity(a: WindowStats) -> None:
    empty = WindowStats.empty("agent", "v1", START, 5, a.source)
    assert empty.merge(a) == a
    assert a.merge(empty) == a


@settings(max_examples=100, deadline=None)
@given(partials(source="w1"), partials(source="w2"))
def test_merge_adds_counts_and_combines_sources(a: WindowStats, b: WindowStats) -> None:
    merged = a.merge(b)
    assert merged.source == MERGED_SOURCE
    assert merged.requests == a.requests + b.requests == sum(merged.latency_buckets)
    assert merged.errors == a.errors + b.errors
    assert merged.quality_count == a.quality_count + b.quality_count
    assert merged.request_cost_count == a.request_cost_count + b.request_cost_count
    assert merged.request_log_cost_sum == pytest.approx(
        a.request_log_cost_sum + b.request_log_cost_sum, rel=1e-12, abs=1e-9
    )
    assert a.merge(a).source == "w1"


@settings(max_examples=50, deadline=None)
@given(partials(source="w1"), partials(source="w2"))
def test_a_partial_from_before_the_per_request_fields_still_reads_and_merges(
    a: WindowStats, b: WindowStats
) -> None:
    """A record on the topic, or a row read back, written before ``request_cost_*``."""
    record = a.model_dump(mode="json")
    per_request = [name for name in record if name.startswith("request_")]
    assert len(per_request) == 4
    old = WindowStats.model_validate_json(
        json.dumps({k: record[k] for k in record.keys() - set(per_request)})
    )
    assert (old.request_cost_count, old.request_log_cost_sum) == (0, 0.0)
    merged = old.merge(b)
    assert merged.request_cost_count == b.request_cost_count
    assert merged.cost_count == a.cost_count + b.cost_count


def test_merge_refuses_other_windows_and_versions() -> None:
    a = WindowStats.empty("agent", "v1", START, 5, "w1")
    for other in (
        WindowStats.empty("agent", "v2", START, 5, "w1"),
        WindowStats.empty("other", "v1", START, 5, "w1"),
        WindowStats.empty("agent", "v1", START + timedelta(seconds=5), 5, "w1"),
        WindowStats.empty("agent", "v1", START, 10, "w1"),
    ):
        with pytest.raises(ValueError, match="cannot merge"):
            a.merge(other)


def test_grid_ratio_and_coverage() -> None:
    assert LATENCY_BUCKET_RATIO <= 1.1
    uppers = np.array([bucket_upper_ms(i) for i in range(1, LATENCY_BUCKET_COUNT - 1)])
    lowers = np.array([bucket_lower_ms(i) for i in range(1, LATENCY_BUCKET_COUNT - 1)])
    assert np.all(uppers / lowers <= 1.1)
    assert bucket_lower_ms(1) == LATENCY_MIN_MS == 1.0
    assert bucket_upper_ms(LATENCY_BUCKET_COUNT - 2) == pytest.approx(LATENCY_MAX_MS)
    assert LATENCY_MAX_MS >= 10 * 60 * 1000  # ten minutes
    assert bucket_upper_ms(LATENCY_BUCKET_COUNT - 1) == math.inf
    assert bucket_lower_ms(0) == 0.0
    assert latency_bucket_index(0.0) == 0
    assert latency_bucket_index(1.0) == 0
    assert latency_bucket_index(1e6) == LATENCY_BUCKET_COUNT - 2
    assert latency_bucket_index(1e6 * 1.0001) == LATENCY_BUCKET_COUNT - 1
    with pytest.raises(ValueError):
        bucket_upper_ms(LATENCY_BUCKET_COUNT)


@settings(max_examples=500, deadline=None)
@given(st.floats(0.0, 1e7, allow_nan=False))
def test_bucket_index_brackets_the_value(ms: float) -> None:
    i = latency_bucket_index(ms)
    assert bucket_lower_ms(i) < ms <= bucket_upper_ms(i) or (i == 0 and ms == 0.0)
    assert abs(int(latency_bucket_indices([ms])[0]) - i) <= 1  # vectorised: edges may differ


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_bucket_index_rejects_impossible_latencies(bad: float) -> None:
    with pytest.raises(ValueError):
        latency_bucket_index(bad)
    with pytest.raises(ValueError):
        latency_bucket_indices([bad])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(1.0, 1e6, allow_nan=False), min_size=1, max_size=200),
    st.floats(0.0, 1.0),
)
def test_quantile_relative_error_is_bounded(values: list[float], q: float) -> None:
    ordered = sorted(values)
    exact = ordered[max(1, math.ceil(q * len(values) - 1e-9)) - 1]
    estimate = quantile_from_buckets(latency_histogram(values), q)
    # Values at 1.0 ms sit in the underflow bucket, reported as 1.0 ms: exact.
    assert abs(estimate / exact - 1.0) <= QUANTILE_MAX_RELATIVE_ERROR + 1e-9


def test_quantile_error_bound_value_and_empty_histogram() -> None:
    assert pytest.approx(math.sqrt(10 ** (1 / 25)) - 1) == QUANTILE_MAX_RELATIVE_ERROR
    assert QUANTILE_MAX_RELATIVE_ERROR < 0.048
    with pytest.raises(ValueError, match="empty"):
        quantile_from_buckets([0] * LATENCY_BUCKET_COUNT, 0.5)
    with pytest.raises(ValueError):
        quantile_from_buckets(latency_histogram([5.0]), 1.5)


def test_from_arrays_sums() -> None:
    stats = WindowStats.from_arrays(
        agent="a",
        version="v",
        window_start=START,
        window_seconds=5,
        source="sim",
        latency_ms=[10.0, 20.0, 3000.0],
        error=[False, True, False],
        cost_usd=[0.0, 0.5, 0.25],
        request_cost_usd=[0.75],
        quality=[0.5, 1.0],
        task_completed=[True, False, True],
    )
    assert (stats.requests, stats.errors, stats.tasks_attempted, stats.tasks_completed) == (
        3,
        1,
        3,
        2,
    )
    assert stats.cost_count == 3
    assert stats.cost_sum == pytest.approx(0.75)
    assert stats.cost_sumsq == pytest.approx(0.3125)
    assert stats.log_cost_sum == pytest.approx(
        math.log(LOG_COST_EPSILON_USD) + log_cost(0.5) + log_cost(0.25)
    )
    assert stats.request_cost_count == 1
    assert stats.request_cost_sum == pytest.approx(0.75)
    assert stats.request_log_cost_sum == pytest.approx(log_cost(0.75))
    assert stats.request_log_cost_sumsq == pytest.approx(log_cost(0.75) ** 2)
    assert stats.quality_sumsq == pytest.approx(1.25)
    assert stats.latency_sum_ms == pytest.approx(3030.0)
    assert stats.latency_buckets[latency_bucket_index(3000.0)] == 1
    assert stats.window_end == START + timedelta(seconds=5)


def _valid(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "agent": "a",
        "version": "v",
        "window_start": START,
        "window_seconds": 5,
        "source": "w1",
        "requests": 2,
        "errors": 1,
        "latency_buckets": [2] + [0] * (LATENCY_BUCKET_COUNT - 1),
    }
    base.update(changes)
    return base


@pytest.mark.parametrize(
    "changes",
    [
        {"errors": 3},
        {"requests": -1, "errors": 0, "latency_buckets": [0] * LATENCY_BUCKET_COUNT},
        {"latency_buckets": [1] + [0] * (LATENCY_BUCKET_COUNT - 1)},
        {"latency_buckets": [2]},
        {"cost_sum": math.nan},
        {"cost_sum": math.inf},
        {"cost_sum": 1.0},
        {"request_cost_count": 3},
        {"request_log_cost_sum": -13.8},
        {"request_cost_count": 1, "request_cost_sum": -1.0},
        {"quality_count": 1, "quality_sum": 2.0},
        {"tasks_attempted": 1, "tasks_completed": 2},
        {"tool_calls": 1, "tool_errors": 2},
        {"window_seconds": 0},
        {"window_start": datetime(2026, 1, 5)},
        {"requests": 2.0},
        {"extra_field": 1},
        {"source": ""},
    ],
)
def test_validation_rejects_inconsistent_rows(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        WindowStats.model_validate(_valid(**changes))


def test_json_round_trip_and_utc_normalisation() -> None:
    local = START.astimezone(timezone(timedelta(hours=2)))
    stats = WindowStats.model_validate(_valid(window_start=local))
    assert stats.window_start.utcoffset() == timedelta(0)
    assert WindowStats.model_validate_json(stats.model_dump_json()) == stats
    with pytest.raises(ValidationError):
        WindowStats.model_validate_json(
            stats.model_dump_json().replace('"errors":1', '"errors":NaN')
        )
