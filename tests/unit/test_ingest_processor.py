"""The batch processor's promises: retry until stored, never raise, give up only when stopping."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from typing import Any

from streams.ingest import (
    DLQ_REASON,
    SPAN_COLUMNS,
    Header,
    IngestProcessor,
    RawMessage,
    RetryPolicy,
    SpanWrite,
)
from streams.pricing import builtin_prices
from tests.unit.test_ingest import START, encoded

NO_WAIT = RetryPolicy(first_delay_s=0.0, max_delay_s=0.0)
OFFSET = SPAN_COLUMNS.index("kafka_offset")


class FlakySpans:
    """A span sink that fails its first ``failures`` writes."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.batches: list[list[Sequence[Any]]] = []

    async def write(self, rows: Sequence[Sequence[Any]]) -> SpanWrite:
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
    assert [row[OFFSET] for row in owned] == [0, 2, 4]
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
