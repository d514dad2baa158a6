"""The batch processor's promises: retry until stored, never raise, give up only when stopping."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence

import pytest

from schemas.topics import DLQ_REASON
from streams.ingest.pricing import builtin_prices
from streams.ingest.route import Header, RawMessage, SpanRow, SpanWrite, position
from streams.runtime.processor import IngestProcessor, PipelineBugError, RetryPolicy
from tests.unit.ingest.test_route import START, encoded

NO_WAIT = RetryPolicy(first_delay_s=0.0, max_delay_s=0.0)


class FlakySpans:
    """A span sink that fails its first ``failures`` writes."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.batches: list[list[SpanRow]] = []

    async def write(self, rows: Sequence[SpanRow]) -> SpanWrite:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("ClickHouse went away")
        self.batches.append(list(rows))
        return SpanWrite.all_new(rows)


class RecordedDeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes | None, list[Header]]] = []

    async def send(self, key: bytes | None, value: bytes | None, headers: list[Header]) -> None:
        self.sent.append((key, value, headers))


def batch() -> list[RawMessage]:
    good = [encoded(event_id=str(uuid.uuid4())) for _ in range(3)]
    values = [good[0], b"{broken", good[1], json.dumps({"kind": "llm"}).encode(), good[2]]
    return [RawMessage("coalmine.traces", 0, i, b"k", v) for i, v in enumerate(values)]


def test_a_failing_sink_is_retried_until_the_batch_is_stored() -> None:
    spans, dead = FlakySpans(failures=3), RecordedDeadLetters()
    processor = IngestProcessor(
        spans, dead, builtin_prices(), lambda: False, retry=NO_WAIT, clock=START.timestamp
    )
    owned = asyncio.run(processor.process(batch()))
    assert owned is not None
    assert [row.kafka_offset for row in owned] == [0, 2, 4]
    assert [len(b) for b in spans.batches] == [3]
    assert [value for _, value, _ in dead.sent] == [b"{broken", b'{"kind": "llm"}']
    assert all(dict(headers)[DLQ_REASON] for _, _, headers in dead.sent)
    counters = processor.counters
    assert (counters.spans_written, counters.dead_lettered, counters.sink_retries) == (3, 2, 3)


def test_a_stopping_worker_leaves_an_unstored_batch_unacknowledged() -> None:
    spans = FlakySpans(failures=1)
    processor = IngestProcessor(
        spans, RecordedDeadLetters(), builtin_prices(), lambda: True, clock=START.timestamp
    )
    assert asyncio.run(processor.process(batch())) is None
    assert spans.batches == []
    assert processor.counters.spans_written == 0


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = RetryPolicy(first_delay_s=0.2, max_delay_s=1.0)
    assert [policy.delay(n) for n in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]


class RefusingSpans:
    """A sink that refuses the rows of the given offsets, as a conflict or bad values are."""

    def __init__(self, refused_offsets: set[int]) -> None:
        self.refused_offsets = refused_offsets

    async def write(self, rows: Sequence[SpanRow]) -> SpanWrite:
        kept = [row for row in rows if row.kafka_offset not in self.refused_offsets]
        refused = {position(r): "event_id conflict" for r in rows if r not in kept}
        return SpanWrite(len(kept), SpanWrite.all_new(kept).owners, refused)


def test_rows_the_sink_refuses_are_dead_lettered_and_not_counted() -> None:
    dead = RecordedDeadLetters()
    processor = IngestProcessor(
        RefusingSpans({2}), dead, builtin_prices(), lambda: False, clock=START.timestamp
    )
    messages = batch()
    owned = asyncio.run(processor.process(messages))
    assert owned is not None
    assert [row.kafka_offset for row in owned] == [0, 4]
    reasons = [dict(headers)[DLQ_REASON] for _, _, headers in dead.sent]
    assert reasons[-1] == b"event_id conflict"
    assert dead.sent[-1][1] == messages[2].value
    counters = processor.counters
    assert (counters.spans_written, counters.dead_lettered, counters.duplicates_skipped) == (
        2,
        3,
        0,
    )


class BrokenSpans:
    async def write(self, rows: Sequence[SpanRow]) -> SpanWrite:
        raise KeyError("a bug in the sink")


def test_a_failure_no_retry_can_mend_stops_the_batch_with_the_cause() -> None:
    processor = IngestProcessor(
        BrokenSpans(), RecordedDeadLetters(), builtin_prices(), lambda: False, retry=NO_WAIT
    )
    with pytest.raises(PipelineBugError, match="ClickHouse insert failed and retrying cannot help"):
        asyncio.run(processor.process(batch()))
    assert processor.counters.sink_retries == 0


def test_a_batch_with_many_spans_is_written_in_inserts_of_the_configured_size() -> None:
    spans = FlakySpans(failures=1)
    processor = IngestProcessor(
        spans,
        RecordedDeadLetters(),
        builtin_prices(),
        lambda: False,
        retry=NO_WAIT,
        clock=START.timestamp,
        max_rows_per_write=2,
    )
    message = RawMessage(
        "coalmine.traces",
        0,
        7,
        b"k",
        b"\n".join(encoded(event_id=str(uuid.uuid4())) for _ in range(5)),
    )
    owned = asyncio.run(processor.process([message]))
    assert owned is not None and [row.kafka_index for row in owned] == [0, 1, 2, 3, 4]
    assert [len(b) for b in spans.batches] == [2, 2, 1]
    assert processor.counters.spans_written == 5
