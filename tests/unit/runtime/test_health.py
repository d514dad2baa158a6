"""/health's decision: degraded while writes are retried, the broker is silent or messages
wait unstored; ok otherwise, idle included."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from streams.ingest.pricing import builtin_prices
from streams.ingest.route import SpanRow, SpanWrite
from streams.runtime.health import (
    HealthLimits,
    HealthSnapshot,
    HealthState,
    PartitionPosition,
    assess,
    first_line,
    next_offsets,
)
from streams.runtime.processor import IngestProcessor, RetryPolicy
from tests.unit.ingest.test_route import START
from tests.unit.runtime.test_processor import FlakySpans, RecordedDeadLetters, batch


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def position(
    partition: int = 0,
    end: int | None = 100,
    committed: int | None = 100,
    stored: int | None = 100,
    fetched_at: float | None = 1000.0,
) -> PartitionPosition:
    return PartitionPosition(partition, end, committed, stored, fetched_at)


def test_a_fresh_idle_worker_is_ok() -> None:
    state = HealthState(Clock())
    verdict = assess(state.snapshot(1000.0, [position()]))
    assert (verdict.status, verdict.reasons) == ("ok", ())
    assert verdict.details["consumer_lag"] == 0
    assert verdict.details["seconds_since_stored"] is None


def test_a_failing_write_is_degraded_until_it_succeeds() -> None:
    clock = Clock()
    state = HealthState(clock)
    state.failed("ClickHouse insert", OSError("disk full\n  at line 2 of the stack"))
    clock.now += 4
    state.failed("ClickHouse insert", OSError("disk still full"))
    clock.now += 1.5
    verdict = assess(state.snapshot(clock.now, []))
    assert verdict.status == "degraded"
    assert verdict.reasons == (
        "ClickHouse insert failing for 5.5 s (2 attempt(s)): OSError: disk still full",
    )
    assert verdict.details["retrying"] == [
        {
            "what": "ClickHouse insert",
            "seconds": 5.5,
            "attempts": 2,
            "last_error": "OSError: disk still full",
        }
    ]
    state.succeeded("ClickHouse insert")
    assert assess(state.snapshot(clock.now, [])).status == "ok"


def test_each_failing_write_is_reported_on_its_own() -> None:
    state = HealthState(Clock())
    state.failed("ClickHouse insert", TimeoutError())
    state.failed("emitting window rows", ConnectionError("broker gone"))
    state.succeeded("ClickHouse insert")
    verdict = assess(state.snapshot(1000.0, []))
    assert verdict.reasons == (
        "emitting window rows failing for 0.0 s (1 attempt(s)): ConnectionError: broker gone",
    )


def test_a_silent_broker_is_degraded_after_the_limit() -> None:
    limits = HealthLimits(fetch_silence_s=10.0)
    silent = [position(0, fetched_at=990.5), position(1, fetched_at=989.0), position(2)]
    snapshot = HealthSnapshot(now=1000.0, started=0.0, last_stored=999.0, partitions=())
    assert assess(snapshot, limits).status == "ok"
    verdict = assess(HealthSnapshot(1000.0, 0.0, 989.5, (), tuple(silent)), limits)
    assert verdict.reasons == ("no fetch response from the broker for 11.0 s (partitions 1)",)
    assert verdict.details["partitions"][1]["seconds_since_fetch"] == 11.0


def test_a_partition_fetching_nothing_while_batches_are_stored_is_busy_not_cut_off() -> None:
    # Its records wait in the consumer's buffer while the sink works through a backlog.
    busy = (position(0, fetched_at=980.0), position(1))
    snapshot = HealthSnapshot(1000.0, 0.0, 999.0, (), busy)
    assert assess(snapshot, HealthLimits(fetch_silence_s=10.0)).status == "ok"


def test_partitions_never_fetched_yet_are_not_a_silent_broker() -> None:
    snapshot = HealthSnapshot(1000.0, 0.0, None, (), (position(fetched_at=None, end=None),))
    verdict = assess(snapshot)
    assert verdict.status == "ok"
    assert verdict.details["partitions"][0]["lag"] is None


def test_messages_waiting_while_nothing_is_stored_is_a_stall() -> None:
    limits = HealthLimits(stall_s=30.0)
    waiting = (position(0, end=150, stored=100), position(1, end=80, stored=None, committed=70))
    assert assess(HealthSnapshot(1000.0, 0.0, 975.0, (), waiting), limits).status == "ok"
    verdict = assess(HealthSnapshot(1000.0, 0.0, 965.0, (), waiting), limits)
    assert verdict.reasons == ("60 message(s) waiting, none stored for 35.0 s",)


def test_a_worker_that_never_stored_counts_its_stall_from_its_start() -> None:
    waiting = (position(end=10, committed=0, stored=None, fetched_at=None),)
    limits = HealthLimits(stall_s=30.0)
    assert assess(HealthSnapshot(1029.0, 1000.0, None, (), waiting), limits).status == "ok"
    assert assess(HealthSnapshot(1031.0, 1000.0, None, (), waiting), limits).status == "degraded"


def test_an_idle_worker_that_stored_long_ago_is_ok() -> None:
    idle = position(end=100, stored=100, fetched_at=9999.5)
    snapshot = HealthSnapshot(10_000.0, 0.0, 1.0, (), (idle,))
    verdict = assess(snapshot)
    assert verdict.status == "ok"
    assert verdict.details["seconds_since_stored"] == 9999.0


def test_lag_is_the_high_watermark_minus_the_committed_offset() -> None:
    partitions = (position(0, end=120, committed=100), position(1, end=7, committed=None))
    verdict = assess(HealthSnapshot(1000.0, 0.0, 1000.0, (), partitions))
    assert [p["lag"] for p in verdict.details["partitions"]] == [20, None]
    assert verdict.details["consumer_lag"] == 20


def test_stored_positions_only_move_forward_and_are_forgotten_on_revocation() -> None:
    state = HealthState(Clock())
    state.stored(next_offsets([(0, 5), (1, 9), (0, 7)]))
    state.stored({0: 3})
    assert (state.stored_offset(0), state.stored_offset(1)) == (8, 10)
    assert state.last_stored == 1000.0
    state.forget_partitions()
    assert state.stored_offset(0) is None


def test_first_line_keeps_one_line_of_the_error() -> None:
    assert first_line(ValueError("bad\nmore")) == "ValueError: bad"
    assert first_line(TimeoutError()) == "TimeoutError"


class SpansSeeingHealth:
    """A flaky span sink that notes, at each attempt, which writes ``/health`` sees failing."""

    def __init__(self, state: HealthState, failures: int) -> None:
        self.state = state
        self.inner = FlakySpans(failures)
        self.seen: list[tuple[str, ...]] = []

    async def write(self, rows: Sequence[SpanRow]) -> SpanWrite:
        self.seen.append(tuple(r.what for r in self.state.snapshot(0.0, []).retrying))
        return await self.inner.write(rows)


def test_the_retry_loop_reports_into_the_state() -> None:
    state = HealthState(Clock())
    spans = SpansSeeingHealth(state, failures=2)
    processor = IngestProcessor(
        spans,
        RecordedDeadLetters(),
        builtin_prices(),
        lambda: False,
        retry=RetryPolicy(first_delay_s=0.0, max_delay_s=0.0),
        clock=START.timestamp,
        health=state,
    )
    assert asyncio.run(processor.process(batch())) is not None
    assert spans.seen == [(), ("ClickHouse insert",), ("ClickHouse insert",)]
    assert state.snapshot(0.0, []).retrying == ()
