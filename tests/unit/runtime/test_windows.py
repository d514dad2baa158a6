"""The windows' exactness protocol with an in-memory topic, store and clock: a message is
acknowledged only once its window row is on the topic and then in the store; coverage makes
a redelivered span count once; a revocation discards what began before it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from schemas.topics import LATE_HEADER
from schemas.window_stats import WindowStats
from streams.ingest.aggregate import WindowAggregator, WindowKey, WindowRow
from streams.ingest.route import Header, MessagePosition, SpanRow
from streams.runtime.processor import Retrier, RetryPolicy
from streams.runtime.windows import StreamWindows
from tests.unit.ingest.test_aggregate import EPOCH, T0, TOPIC, span

WINDOW_S = 5
LATENESS_S = 1.0
CLOSE = T0 + WINDOW_S + LATENESS_S
"""When the window starting at ``T0`` closes."""
NO_WAIT = RetryPolicy(first_delay_s=0.0, max_delay_s=0.0)

Entry = tuple[str, Any]
"""What happened, in order: ("topic", row source), ("store", row sources), ("ack", token)."""


class MemoryTopic:
    """The ``coalmine.version-stats`` topic; fails its first ``failures`` sends."""

    def __init__(self, journal: list[Entry], failures: int = 0) -> None:
        self.journal = journal
        self.failures = failures
        self.records: list[tuple[bytes | None, WindowStats, dict[str, bytes]]] = []

    async def send(self, key: bytes | None, value: bytes | None, headers: list[Header]) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("broker unreachable")
        stats = WindowStats.model_validate_json(value or b"")
        self.journal.append(("topic", stats.source))
        self.records.append((key, stats, dict(headers)))


class MemoryStore:
    """``coalmine.version_stats`` in memory, its coverage answered as the SQL query does.

    ``failures`` writes (or coverage reads) fail first; a ``gate`` holds writes and reads
    until it is set, so a test can revoke partitions in the middle of one.
    """

    def __init__(self, journal: list[Entry]) -> None:
        self.journal = journal
        self.rows: list[WindowRow] = []
        self.write_failures = 0
        self.coverage_failures = 0
        self.coverage_reads: list[dict[int, int]] = []
        self.gate: asyncio.Event | None = None

    async def write(self, rows: Sequence[WindowRow]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.write_failures > 0:
            self.write_failures -= 1
            raise ConnectionError("ClickHouse went away")
        self.journal.append(("store", [row.stats.source for row in rows]))
        self.rows.extend(rows)

    async def coverage(
        self, topic: str, window_seconds: int, lowest: Mapping[int, int]
    ) -> dict[int, dict[WindowKey, int]]:
        self.coverage_reads.append(dict(lowest))
        if self.gate is not None:
            await self.gate.wait()
        if self.coverage_failures > 0:
            self.coverage_failures -= 1
            raise ConnectionError("ClickHouse went away")
        covered: dict[int, dict[WindowKey, int]] = {partition: {} for partition in lowest}
        for row in self.rows:
            stats = row.stats
            if (
                row.topic == topic
                and stats.window_seconds == window_seconds
                and row.partition in lowest
                and row.offset_until > lowest[row.partition]
            ):
                key = (stats.agent, stats.version, int(stats.window_start.timestamp()))
                windows = covered[row.partition]
                windows[key] = max(windows.get(key, 0), row.offset_until)
        return covered


@dataclass
class Clock:
    now: float = T0 + 1

    def __call__(self) -> float:
        return self.now


@dataclass
class Worker:
    """One worker's windows over a store that outlives it (as ClickHouse outlives a crash)."""

    store: MemoryStore
    clock: Clock = field(default_factory=Clock)
    stopping: bool = False
    topic_failures: int = 0

    def __post_init__(self) -> None:
        self.journal = self.store.journal
        self.topic = MemoryTopic(self.journal, self.topic_failures)
        self.windows = StreamWindows[MessagePosition](
            WindowAggregator(TOPIC, WINDOW_S, LATENESS_S),
            self.topic,
            self.store,
            Retrier(lambda: self.stopping, NO_WAIT),
            self.clock,
        )

    async def ack(self, token: MessagePosition) -> bool:
        self.journal.append(("ack", token))
        return True

    def acked(self) -> list[MessagePosition]:
        return [token for what, token in self.journal if what == "ack"]

    def add(
        self,
        rows: Sequence[SpanRow],
        extra: Sequence[MessagePosition] = (),
        epoch: int | None = None,
    ) -> list[MessagePosition] | None:
        """A stored batch: ``rows`` owned by their messages, ``extra`` messages without one."""
        positions = [(row.kafka_partition, row.kafka_offset) for row in rows] + list(extra)
        batch = {position: position for position in positions}
        epoch = self.windows.epoch if epoch is None else epoch
        return asyncio.run(self.windows.add(rows, batch, epoch))

    def flush(self) -> bool:
        return asyncio.run(self.windows.flush_due(self.ack))


async def until(condition: Callable[[], bool]) -> None:
    """Let the other tasks run until ``condition`` holds (a bounded number of turns)."""
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def new_worker(**kwargs: Any) -> Worker:
    return Worker(MemoryStore([]), **kwargs)


def spans(partition: int, offsets: range, seconds: float = 1.0, **values: Any) -> list[SpanRow]:
    end = EPOCH + timedelta(seconds=seconds)
    return [
        span(end_time=end, kafka_partition=partition, kafka_offset=offset, **values)
        for offset in offsets
    ]


def test_messages_are_acknowledged_once_their_row_is_on_the_topic_then_stored() -> None:
    worker = new_worker()
    # offset 3's message stored no span of its own (a duplicate, a dead letter): acked at once
    assert worker.add(spans(0, range(3)), extra=[(0, 3)]) == [(0, 3)]
    worker.journal.clear()
    worker.clock.now = CLOSE - 0.001
    assert worker.flush()
    assert worker.journal == []
    worker.clock.now = CLOSE
    assert worker.flush()
    source = f"{TOPIC}/0@0"
    assert worker.journal == [
        ("topic", source),
        ("store", [source]),
        ("ack", (0, 0)),
        ("ack", (0, 1)),
        ("ack", (0, 2)),
    ]
    ((key, stats, headers),) = worker.topic.records
    assert (key, stats.requests, headers) == (b"bot", 3, {LATE_HEADER: b"0"})
    (row,) = worker.store.rows
    assert (row.offset_from, row.offset_until, row.late) == (0, 3, False)
    counters = worker.windows.counters
    assert (counters.rows_emitted, counters.late_rows_emitted, counters.open_windows) == (1, 0, 0)


def test_a_request_is_counted_with_the_cost_of_its_spans_in_its_message() -> None:
    """Offset 0 carries a request and its two llm calls; offset 1 a request whose llm call
    came in offset 2, after it."""
    llm: dict[str, Any] = {"kind": "llm", "cost_source": "reported"}
    batch = [
        *spans(0, range(1), cost_usd=0.01, kafka_index=0, **llm),
        *spans(0, range(1), cost_usd=0.02, kafka_index=1, **llm),
        *spans(0, range(1), kafka_index=2),
        *spans(0, range(1, 2), trace_id="late"),
        *spans(0, range(2, 3), cost_usd=0.04, trace_id="late", **llm),
    ]
    worker = new_worker()
    worker.add(batch)
    worker.clock.now = CLOSE
    assert worker.flush()
    (row,) = worker.store.rows
    stats = row.stats
    assert (stats.requests, stats.cost_count, stats.request_cost_count) == (2, 3, 1)
    assert stats.request_cost_sum == pytest.approx(0.03)
    assert stats.cost_sum == pytest.approx(0.07)


def test_nothing_is_acknowledged_when_the_store_fails_and_the_worker_stops() -> None:
    worker = new_worker(stopping=True)
    worker.store.write_failures = 1
    worker.add(spans(0, range(3)))
    worker.clock.now = CLOSE
    assert not worker.flush()
    assert worker.acked() == []
    assert worker.store.rows == []
    assert worker.windows.counters.rows_emitted == 0


def test_the_store_is_not_written_when_the_topic_fails_and_the_worker_stops() -> None:
    worker = new_worker(stopping=True, topic_failures=1)
    worker.add(spans(0, range(3)))
    worker.clock.now = CLOSE
    assert not worker.flush()
    assert (worker.topic.records, worker.store.rows, worker.acked()) == ([], [], [])


def test_a_failing_store_is_retried_with_the_same_row_and_only_then_acknowledged() -> None:
    worker = new_worker()
    worker.store.write_failures = 2
    worker.add(spans(0, range(2)))
    worker.clock.now = CLOSE
    assert worker.flush()
    source = f"{TOPIC}/0@0"
    # each attempt puts the row on the topic again, with the identity of the first
    assert worker.journal == [
        ("topic", source),
        ("topic", source),
        ("topic", source),
        ("store", [source]),
        ("ack", (0, 0)),
        ("ack", (0, 1)),
    ]


def test_coverage_is_read_once_per_partition_from_its_lowest_offset() -> None:
    worker = new_worker()
    worker.add(spans(0, range(10, 12)), extra=[(0, 9)])
    worker.add(spans(0, range(12, 14)))
    worker.add(spans(1, range(4, 5)))
    worker.add(spans(0, range(14, 15)) + spans(1, range(5, 6)))
    assert worker.store.coverage_reads == [{0: 9}, {1: 4}]


def test_spans_a_stored_row_already_counts_are_skipped_after_a_crash() -> None:
    first = new_worker()
    first.add(spans(0, range(5)))
    first.clock.now = CLOSE
    assert first.flush()
    # the worker dies before committing: its successor gets offsets 0..7 again
    second = Worker(first.store, Clock(CLOSE + 0.5))
    second.journal.clear()
    assert second.add(spans(0, range(8))) == [(0, offset) for offset in range(5)]
    second.clock.now = CLOSE + WINDOW_S
    assert second.flush()
    assert second.acked() == [(0, 5), (0, 6), (0, 7)]
    correction = second.store.rows[-1]
    assert (correction.offset_from, correction.offset_until, correction.late) == (5, 8, True)
    assert sum(row.stats.requests for row in second.store.rows) == 8


def test_a_span_for_an_emitted_window_goes_into_a_correction_row() -> None:
    worker = new_worker()
    worker.add(spans(0, range(2)))
    worker.clock.now = CLOSE
    assert worker.flush()
    worker.clock.now = CLOSE + 1
    assert worker.add(spans(0, range(2, 3), kind="tool")) == []
    assert worker.flush()  # corrections wait for the next close on the windows' grid
    assert len(worker.store.rows) == 1
    worker.clock.now = CLOSE + WINDOW_S
    assert worker.flush()
    assert worker.acked()[-1] == (0, 2)
    (_, late, headers) = worker.topic.records[-1]
    assert (late.window_start, late.tool_calls, late.requests) == (EPOCH, 1, 0)
    assert headers == {LATE_HEADER: b"1"}
    assert worker.windows.counters.late_rows_emitted == 1


def test_a_batch_begun_before_a_revocation_is_not_counted() -> None:
    worker = new_worker()
    began = worker.windows.epoch
    asyncio.run(worker.windows.forget())
    assert worker.add(spans(0, range(3)), epoch=began) is None
    assert worker.windows.counters.open_windows == 0
    worker.clock.now = CLOSE
    assert worker.flush()
    assert (worker.topic.records, worker.acked()) == ([], [])


def test_a_revocation_during_the_coverage_read_loads_no_coverage() -> None:
    async def scenario(worker: Worker) -> list[MessagePosition] | None:
        gate = worker.store.gate = asyncio.Event()
        rows = spans(0, range(3))
        batch = {(0, offset): (0, offset) for offset in range(3)}
        adding = asyncio.ensure_future(worker.windows.add(rows, batch, worker.windows.epoch))
        await until(lambda: bool(worker.store.coverage_reads))
        await worker.windows.forget()
        gate.set()
        return await adding

    worker = new_worker()
    assert asyncio.run(scenario(worker)) is None
    worker.store.gate = None
    assert worker.add(spans(0, range(3))) == []  # the new epoch reads coverage again
    assert worker.store.coverage_reads == [{0: 0}, {0: 0}]


def test_a_revocation_drops_open_windows_and_leaves_their_messages_unacknowledged() -> None:
    worker = new_worker()
    worker.add(spans(0, range(3)))
    assert worker.windows.counters.open_windows == 1
    asyncio.run(worker.windows.forget())
    assert worker.windows.counters.open_windows == 0
    worker.clock.now = CLOSE
    assert worker.flush()
    assert (worker.topic.records, worker.acked()) == ([], [])


def test_a_revocation_waits_for_an_emission_in_progress() -> None:
    async def scenario(worker: Worker) -> None:
        gate = worker.store.gate = asyncio.Event()
        flushing = asyncio.ensure_future(worker.windows.flush_due(worker.ack))
        await until(lambda: bool(worker.topic.records))
        forgetting = asyncio.ensure_future(worker.windows.forget())
        await asyncio.sleep(0)
        assert not forgetting.done()
        gate.set()
        assert await flushing
        await forgetting

    worker = new_worker()
    worker.add(spans(0, range(2)))
    worker.clock.now = CLOSE
    asyncio.run(scenario(worker))
    assert worker.acked() == [(0, 0), (0, 1)]
    assert worker.windows.epoch == 1


def test_a_stopping_worker_that_cannot_read_coverage_counts_nothing() -> None:
    worker = new_worker(stopping=True)
    worker.store.coverage_failures = 1
    assert worker.add(spans(0, range(3))) is None
    assert worker.windows.counters.open_windows == 0
    worker.clock.now = CLOSE
    assert worker.flush()
    assert worker.topic.records == []


def test_a_message_with_spans_in_two_windows_is_acknowledged_once_both_rows_are_stored() -> None:
    worker = new_worker()
    # The message at offset 0 carries three spans: two in the first window, one in the next.
    batch = [
        *spans(0, range(1), seconds=1.0, kafka_index=0),
        *spans(0, range(1), seconds=2.0, kafka_index=1),
        *spans(0, range(1), seconds=WINDOW_S + 1.0, kafka_index=2),
        *spans(0, range(1, 2), seconds=1.0),
    ]
    assert worker.add(batch) == []
    worker.clock.now = CLOSE
    assert worker.flush()
    first = f"{TOPIC}/0@0"
    # Offset 1 is counted only in the first window; offset 0 waits for the second.
    assert worker.journal == [("topic", first), ("store", [first]), ("ack", (0, 1))]
    assert worker.store.rows[0].stats.requests == 3
    worker.clock.now = CLOSE + WINDOW_S
    assert worker.flush()
    assert worker.acked() == [(0, 1), (0, 0)]  # once, after the second row
    assert [row.stats.requests for row in worker.store.rows] == [3, 1]
    # Both rows begin in the message at offset 0; the second at its span 2.
    assert [row.stats.source for row in worker.store.rows] == [first, f"{first}#2"]
