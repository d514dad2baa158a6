"""Which spans the SDK sends together (pure: clock passed in)."""

from __future__ import annotations

import pytest

from schemas.framing import MAX_MESSAGE_BYTES, MAX_SPANS_PER_MESSAGE, join_spans, split_spans
from streams.sdk.batching import Batch, BatchLimits, Span, SpanBatcher

LIMITS = BatchLimits(max_spans=4, max_bytes=70_000, linger_s=0.005, hold_s=1.0)


def span(trace: str, n: int, size: int = 10) -> Span:
    return Span(trace, f"{trace}-{n}", b"{" + b"x" * (size - 2) + b"}")


def ids(batches: list[Batch]) -> list[list[str]]:
    return [[s.event_id for s in batch.spans] for batch in batches]


def test_a_requests_spans_wait_for_the_request_and_leave_together_after_the_linger() -> None:
    batcher = SpanBatcher(LIMITS)
    assert batcher.add(span("t1", 1), ends_trace=False, now=0.0) == []
    assert batcher.add(span("t1", 2), ends_trace=False, now=0.1) == []
    assert batcher.due(0.5) == []  # the request is still running
    assert batcher.add(span("t1", 3), ends_trace=True, now=0.6) == []  # the request ends
    assert batcher.next_deadline() == pytest.approx(0.605)
    assert batcher.due(0.604) == []
    (batch,) = batcher.due(0.605)
    assert ids([batch]) == [["t1-1", "t1-2", "t1-3"]]
    assert batch.key == "t1"
    assert batcher.next_deadline() is None


def test_requests_share_a_batch_until_it_is_full() -> None:
    batcher = SpanBatcher(LIMITS)
    assert batcher.add(span("a", 1), ends_trace=True, now=0.0) == []
    assert batcher.add(span("b", 1), ends_trace=False, now=0.0) == []
    assert batcher.add(span("b", 2), ends_trace=False, now=0.0) == []
    full = batcher.add(span("b", 3), ends_trace=True, now=0.001)
    assert ids(full) == [["a-1", "b-1", "b-2", "b-3"]]
    assert full[0].key == "a"  # the first span's trace


def test_a_batch_never_passes_its_byte_limit() -> None:
    batcher = SpanBatcher(LIMITS)
    assert batcher.add(span("a", 1, 40_000), ends_trace=True, now=0.0) == []
    full = batcher.add(span("b", 1, 40_000), ends_trace=True, now=0.0)
    assert ids(full) == [["a-1"]]
    (rest,) = batcher.drain(0.0)
    assert ids([rest]) == [["b-1"]]
    assert len(join_spans([s.value for s in rest.spans])) == rest.size


def test_a_request_held_too_long_is_sent_without_its_end() -> None:
    batcher = SpanBatcher(LIMITS)
    batcher.add(span("slow", 1), ends_trace=False, now=0.0)
    assert batcher.next_deadline() == pytest.approx(1.0)
    assert batcher.due(0.999) == []
    assert batcher.due(1.0) == []  # it joins the batch being filled, which lingers
    assert ids(batcher.due(1.006)) == [["slow-1"]]
    assert batcher.next_deadline() is None


def test_drain_sends_everything_held() -> None:
    batcher = SpanBatcher(LIMITS)
    for n in range(6):
        batcher.add(span(f"t{n % 2}", n), ends_trace=False, now=0.0)
    drained = batcher.drain(0.0)
    assert sorted(e for batch in ids(drained) for e in batch) == sorted(
        f"t{n % 2}-{n}" for n in range(6)
    )
    assert all(len(batch.spans) <= LIMITS.max_spans for batch in drained)
    assert batcher.drain(0.0) == [] and batcher.next_deadline() is None


def test_a_batch_of_one_is_the_spans_own_json_and_more_are_lines() -> None:
    values = [b'{"a": 1}', b'{"b": 2}']
    assert join_spans(values[:1]) == values[0]
    assert split_spans(join_spans(values[:1])) is None
    assert split_spans(join_spans(values)) == values


@pytest.mark.parametrize(
    "limits",
    [
        {"max_spans": 0},
        {"max_spans": MAX_SPANS_PER_MESSAGE + 1},
        {"max_bytes": MAX_MESSAGE_BYTES + 1},
        {"max_bytes": 100},
        {"linger_s": -1.0},
        {"hold_s": 601.0},
    ],
)
def test_limits_outside_what_ingest_accepts_are_refused(limits: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BatchLimits(**limits)  # type: ignore[arg-type]


def test_a_trace_that_does_not_fit_starts_its_own_batch_keyed_by_it() -> None:
    batcher = SpanBatcher(LIMITS)  # 4 spans a batch
    batcher.add(span("a", 1), ends_trace=True, now=0.0)
    for n in range(1, 6):
        batcher.add(span("b", n), ends_trace=False, now=0.0)
    full = batcher.add(span("b", 6), ends_trace=True, now=0.0)
    assert ids(full) == [["a-1"], ["b-1", "b-2", "b-3", "b-4"]]
    (rest,) = batcher.drain(0.0)
    assert ids([rest]) == [["b-5", "b-6"]]
    assert [batch.key for batch in [*full, rest]] == ["a", "b", "b"]
