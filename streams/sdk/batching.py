"""Which spans travel together in one ``coalmine.traces`` message (:mod:`schemas.framing`).

Pure: no Kafka, no threads, the clock passed in. :class:`~streams.sdk.publisher.KafkaPublisher`
calls it under its lock and sends the batches it returns.

A request's spans wait for the request: the children of a trace are held until its root span
ends (the ``request`` span, which ends last; any span without a parent ends its trace), then
the whole trace joins the batch being filled (or starts one, when it does not fit), so one
message carries the request's spans together and in the order they ended, and a request with
more spans than a message holds goes on in messages keyed by its trace: on one partition, in
order. A trace held longer than ``hold_s`` (a long request, or
spans whose root never comes) joins the batch anyway. The batch being filled leaves when it
holds ``max_spans`` spans or ``max_bytes`` bytes, or ``linger_s`` after its first span.

What this does to latency, event to queryable: a span waits at most ``linger_s`` (5 ms) for
its batch, and a child span additionally for the rest of its request, at most ``hold_s`` (1 s)
— under the 2 s the worker's windows allow for lateness, so held spans still count on time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.framing import MAX_MESSAGE_BYTES, MAX_SPANS_PER_MESSAGE
from schemas.trace import MAX_EVENT_BYTES

BATCH_MAX_SPANS = 50
BATCH_MAX_BYTES = 256 * 1024
BATCH_LINGER_S = 0.005
REQUEST_HOLD_S = 1.0


@dataclass(frozen=True)
class BatchLimits:
    max_spans: int = BATCH_MAX_SPANS
    max_bytes: int = BATCH_MAX_BYTES
    linger_s: float = BATCH_LINGER_S
    hold_s: float = REQUEST_HOLD_S

    def __post_init__(self) -> None:
        if not 1 <= self.max_spans <= MAX_SPANS_PER_MESSAGE:
            raise ValueError(f"max_spans must be 1 to {MAX_SPANS_PER_MESSAGE}")
        if not MAX_EVENT_BYTES <= self.max_bytes <= MAX_MESSAGE_BYTES:
            raise ValueError(f"max_bytes must be {MAX_EVENT_BYTES} to {MAX_MESSAGE_BYTES}")
        if not (0 <= self.linger_s <= 60 and 0 <= self.hold_s <= 600):
            raise ValueError("linger_s must be 0 to 60 and hold_s 0 to 600 seconds")


@dataclass(frozen=True)
class Span:
    """One encoded span (compact JSON, no newline) and what its delivery report names."""

    trace_id: str
    event_id: str
    value: bytes


@dataclass
class Batch:
    """Spans for one message; its key is the first span's trace id."""

    spans: list[Span] = field(default_factory=list)
    size: int = 0
    """Bytes of the message: the spans and their separators."""
    started: float = 0.0

    @property
    def key(self) -> str:
        return self.spans[0].trace_id


@dataclass
class _HeldTrace:
    spans: list[Span]
    since: float


class SpanBatcher:
    """Spans in, batches out. Every span added comes out in exactly one batch, by
    :meth:`add`, :meth:`due` or :meth:`drain`."""

    def __init__(self, limits: BatchLimits) -> None:
        self.limits = limits
        self._held: dict[str, _HeldTrace] = {}
        self._filling = Batch()

    def add(self, span: Span, ends_trace: bool, now: float) -> list[Batch]:
        """Take a span (``ends_trace``: it is its trace's root); returns the batches full."""
        if not ends_trace:
            held = self._held.get(span.trace_id)
            if held is None:
                self._held[span.trace_id] = _HeldTrace([span], now)
            else:
                held.spans.append(span)
            return []
        held = self._held.pop(span.trace_id, None)
        spans = [*held.spans, span] if held is not None else [span]
        return self._fill(spans, now)

    def due(self, now: float) -> list[Batch]:
        """The batches whose time has come: traces held too long join the batch being
        filled, which leaves once it has lingered."""
        full: list[Batch] = []
        hold = self.limits.hold_s
        for trace_id in [t for t, held in self._held.items() if now - held.since >= hold]:
            full.extend(self._fill(self._held.pop(trace_id).spans, now))
        filling = self._filling
        if filling.spans and now - filling.started >= self.limits.linger_s:
            full.append(self._take())
        return full

    def drain(self, now: float) -> list[Batch]:
        """Everything, now: held traces too (a flush, or the end of the process)."""
        full: list[Batch] = []
        for held in self._held.values():
            full.extend(self._fill(held.spans, now))
        self._held.clear()
        if self._filling.spans:
            full.append(self._take())
        return full

    def next_deadline(self) -> float | None:
        """When :meth:`due` next has something to return (``None``: nothing waits)."""
        times = [held.since + self.limits.hold_s for held in self._held.values()]
        if self._filling.spans:
            times.append(self._filling.started + self.limits.linger_s)
        return min(times, default=None)

    def _fill(self, spans: list[Span], now: float) -> list[Batch]:
        """Add one trace's spans. A trace that does not fit in the batch being filled starts
        a batch of its own, so each message keyed by another trace holds whole traces, and a
        trace too long for one message goes on in messages keyed by its own id: its spans
        stay in order on one partition."""
        full: list[Batch] = []
        limits = self.limits
        trace_size = sum(len(span.value) for span in spans) + len(spans) - 1
        filling = self._filling
        if filling.spans and (
            len(filling.spans) + len(spans) > limits.max_spans
            or filling.size + 1 + trace_size > limits.max_bytes
        ):
            full.append(self._take())
        for span in spans:
            filling = self._filling
            grown = filling.size + len(span.value) + (1 if filling.spans else 0)
            if filling.spans and grown > limits.max_bytes:
                full.append(self._take())
                filling, grown = self._filling, len(span.value)
            if not filling.spans:
                filling.started = now
            filling.spans.append(span)
            filling.size = grown
            if len(filling.spans) >= limits.max_spans:
                full.append(self._take())
        return full

    def _take(self) -> Batch:
        batch, self._filling = self._filling, Batch()
        return batch
