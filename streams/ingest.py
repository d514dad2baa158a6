"""Ingest: decode and validate trace events, price them, and route each to spans or dead letters.

Everything up to :class:`IngestProcessor` is pure and unit-tested without I/O. The processor
is the adapter the Faust agent calls with each batch; it never raises, because an exception
escaping a Faust agent gets the batch acknowledged and lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from schemas.trace import MAX_EVENT_BYTES, PRINTABLE_NOT_BLANK, TraceEvent
from streams.errors import CoalmineError
from streams.failures import Failure, classify, one_line
from streams.health import HealthState
from streams.pricing import PriceTable
from streams.publisher import RateLimitedLog

log = logging.getLogger(__name__)

Header = tuple[str, bytes]
MAX_REASON_CHARS = 1000

DLQ_REASON = "coalmine.dlq.reason"
DLQ_SOURCE_TOPIC = "coalmine.dlq.source_topic"
DLQ_SOURCE_PARTITION = "coalmine.dlq.source_partition"
DLQ_SOURCE_OFFSET = "coalmine.dlq.source_offset"
DLQ_TRUNCATED = "coalmine.dlq.truncated"
"""On a dead letter cut to fit its topic: what was cut (``value``, ``headers``, ``key``)."""
DLQ_ORIGINAL_KEY_BYTES = "coalmine.dlq.original_key_bytes"
DLQ_ORIGINAL_VALUE_BYTES = "coalmine.dlq.original_value_bytes"
DLQ_MAX_RECORD_BYTES = 900_000
"""Key, value and headers of a dead letter at most: under the producer's 1 MB request limit
and the broker's default ``message.max.bytes``, with room for the record's framing."""


@dataclass(frozen=True)
class RawMessage:
    """A consumed Kafka record, exactly as it arrived."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...] = ()


class InvalidEventError(ValueError):
    """A message that can never become a span; the text is the dead-letter reason."""


@dataclass(frozen=True)
class Rejection:
    message: RawMessage
    reason: str


def decode(value: bytes | None) -> TraceEvent:
    """Parse and validate one message value, or raise :class:`InvalidEventError`."""
    if value is None:
        raise InvalidEventError("empty message (tombstone): a trace event needs a JSON value")
    if len(value) > MAX_EVENT_BYTES:
        raise InvalidEventError(f"message is {len(value)} bytes; the limit is {MAX_EVENT_BYTES}")
    try:
        event = TraceEvent.model_validate_json(value)
    except ValidationError as exc:
        raise InvalidEventError(describe_validation_error(exc)) from None
    _check_no_duplicate_keys(value)
    return event


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    unique = dict(pairs)
    if len(unique) != len(pairs):
        keys = [key for key, _ in pairs]
        twice = next(key for i, key in enumerate(keys) if key in keys[:i])
        raise InvalidEventError(f"{twice!r} appears twice in one JSON object")
    return unique


_DUPLICATE_KEYS = json.JSONDecoder(object_pairs_hook=_refuse_duplicates)


def _check_no_duplicate_keys(value: bytes) -> None:
    """JSON parsers disagree on which of two equal keys wins (ours keeps the last one), so an
    object naming a field twice means different things to different readers: refused."""
    _DUPLICATE_KEYS.decode(value.decode("utf-8"))


_PATTERN_MEANINGS = {
    PRINTABLE_NOT_BLANK: "must show a visible character and hold no control character "
    "(newline, tab, NUL, terminal escape) or bidirectional override",
}


def describe_validation_error(exc: ValidationError) -> str:
    """One bounded line naming each failing field: ``input_tokens: Input should be ...``."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in error["loc"]) or "event"
        pattern = str((error.get("ctx") or {}).get("pattern"))
        parts.append(f"{where}: {_PATTERN_MEANINGS.get(pattern, error['msg'])}")
    text = "; ".join(parts)
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


SPAN_COLUMNS: tuple[str, ...] = (
    "event_id",
    "trace_id",
    "span_id",
    "parent_span_id",
    "agent",
    "version",
    "environment",
    "tenant",
    "kind",
    "name",
    "start_time",
    "end_time",
    "duration_ms",
    "status",
    "error_type",
    "error_message",
    "provider",
    "model",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "reasoning_tokens",
    "cost_usd",
    "cost_source",
    "tool_name",
    "task_completed",
    "quality_score",
    "attributes",
    "content_hash",
    "kafka_partition",
    "kafka_offset",
)


def content_hash(value: bytes) -> int:
    """64 bits of the message's bytes: a second message with a stored event_id and another
    hash is a conflict, not a re-delivery."""
    return int.from_bytes(hashlib.blake2b(value, digest_size=8).digest(), "little")


def to_row(
    event: TraceEvent, prices: PriceTable, partition: int, offset: int, value_hash: int = 0
) -> tuple[Any, ...]:
    """The ``coalmine.spans`` row of an event, in :data:`SPAN_COLUMNS` order."""
    cost, source = prices.price(
        event.cost_usd,
        event.provider,
        event.model,
        event.input_tokens,
        event.output_tokens,
        at=event.start_time,
        cached_input_tokens=event.cached_input_tokens,
        reasoning_tokens=event.reasoning_tokens,
    )
    return (
        event.event_id,
        event.trace_id,
        event.span_id,
        event.parent_span_id or "",
        event.agent,
        event.version,
        event.environment,
        event.tenant or "",
        event.kind.value,
        event.name,
        event.start_time,
        event.end_time,
        event.duration_ms,
        event.status.value,
        event.error_type or "",
        event.error_message or "",
        event.provider or "",
        event.model or "",
        event.input_tokens,
        event.output_tokens,
        event.cached_input_tokens,
        event.reasoning_tokens,
        cost,
        source.value,
        event.tool_name or "",
        event.task_completed,
        event.quality_score,
        {key: _attribute_text(value) for key, value in event.attributes.items()},
        value_hash,
        partition,
        offset,
    )


def _attribute_text(value: str | bool | int | float) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@dataclass
class RoutedBatch:
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


@dataclass(frozen=True)
class TimeBounds:
    """The span times ``route`` accepts: a span must start on or after ``earliest_start``
    (what the tables hold and keep: not before 1970, not older than the spans' retention)
    and end by ``latest_end`` (now plus the allowed clock skew)."""

    earliest_start: datetime
    latest_end: datetime

    @classmethod
    def at(
        cls, now: datetime, max_clock_skew: timedelta, retention: timedelta | None
    ) -> TimeBounds:
        """``retention``: how long spans are kept (``None``: forever)."""
        earliest = EPOCH if retention is None else max(EPOCH, now - retention)
        return cls(earliest, now + max_clock_skew)

    def check(self, event: TraceEvent) -> None:
        if event.end_time > self.latest_end:
            ahead = (event.end_time - self.latest_end).total_seconds()
            raise InvalidEventError(
                f"end_time {event.end_time.isoformat()} is {ahead:.3f}s beyond the allowed "
                f"clock skew (latest accepted {self.latest_end.isoformat()}); check the "
                "producer's clock"
            )
        if event.start_time < self.earliest_start:
            why = "the oldest the tables hold" if self.earliest_start == EPOCH else "retention"
            raise InvalidEventError(
                f"start_time {event.start_time.isoformat()} is before "
                f"{self.earliest_start.isoformat()} ({why}): it would never be queryable"
            )


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def route(messages: Sequence[RawMessage], prices: PriceTable, bounds: TimeBounds) -> RoutedBatch:
    """Split a batch into span rows and rejections; one bad message never affects another.

    A span ending after ``bounds.latest_end`` is rejected: its producer's clock is wrong, and
    it would land in a window that has not happened yet. One starting before
    ``bounds.earliest_start`` is rejected: the tables cannot hold it, or would drop it.
    """
    routed = RoutedBatch()
    for message in messages:
        try:
            event = decode(message.value)
            bounds.check(event)
        except InvalidEventError as exc:
            routed.rejected.append(Rejection(message, str(exc)))
            continue
        value_hash = content_hash(message.value or b"")
        routed.rows.append(to_row(event, prices, message.partition, message.offset, value_hash))
    return routed


Owner = tuple[int, int]
"""(Kafka partition, offset) of the message a stored span came from."""


_EVENT_ID = SPAN_COLUMNS.index("event_id")
_PARTITION = SPAN_COLUMNS.index("kafka_partition")
_OFFSET = SPAN_COLUMNS.index("kafka_offset")


@dataclass(frozen=True)
class SpanWrite:
    """What a span sink did with a batch: how many rows were new, and for every event id of
    the batch the message its stored span came from (this batch's or an earlier one's)."""

    inserted: int
    owners: Mapping[Any, Owner]
    refused: Mapping[Owner, str] = field(default_factory=dict)
    """Rows the sink will never store, by their message, with the reason: a conflicting
    event id, or values ClickHouse rejected. They go to the dead-letter topic."""

    @classmethod
    def all_new(cls, rows: Sequence[Sequence[Any]]) -> SpanWrite:
        """Every row inserted, each owned by its own message (sinks that keep nothing)."""
        return cls(len(rows), {row[_EVENT_ID]: position(row) for row in rows})


def position(row: Sequence[Any]) -> Owner:
    """The (partition, offset) of the message a span row came from."""
    return (row[_PARTITION], row[_OFFSET])


def owned_rows(rows: Sequence[Sequence[Any]], owners: Mapping[Any, Owner]) -> list[Sequence[Any]]:
    """The rows whose message is the one their stored span came from.

    A message re-delivered after a crash owns its span; a second message carrying an event id
    already stored from another message (a duplicate sent twice) does not, so aggregates
    count each stored span once.
    """
    return [row for row in rows if owners.get(row[_EVENT_ID]) == position(row)]


def dead_letter_headers(rejection: Rejection) -> list[Header]:
    """The original headers plus why and where from, so the message can be replayed."""
    message = rejection.message
    return [
        *message.headers,
        (DLQ_REASON, rejection.reason.encode("utf-8", errors="replace")),
        (DLQ_SOURCE_TOPIC, message.topic.encode()),
        (DLQ_SOURCE_PARTITION, str(message.partition).encode()),
        (DLQ_SOURCE_OFFSET, str(message.offset).encode()),
    ]


@dataclass(frozen=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: list[Header]


def dead_letter(rejection: Rejection, max_bytes: int = DLQ_MAX_RECORD_BYTES) -> DeadLetter:
    """The dead-letter record of a rejection, cut to fit the dead-letter topic.

    A source topic may hold records larger than the DLQ accepts (a producer's compression
    lets a large value in): then the value, and if need be the key and the original headers,
    are cut, and headers say so and give the original sizes. Otherwise the record is the
    original key, value and headers plus the reason and the source.
    """
    message = rejection.message
    key, value = message.key, message.value
    headers = dead_letter_headers(rejection)
    if _record_bytes(key, value, headers) <= max_bytes:
        return DeadLetter(key, value, headers)
    added = headers[len(message.headers) :]
    notes: list[Header] = [
        (DLQ_ORIGINAL_KEY_BYTES, str(len(key or b"")).encode()),
        (DLQ_ORIGINAL_VALUE_BYTES, str(len(value or b"")).encode()),
    ]
    originals = list(message.headers)
    room = max_bytes - _record_bytes(key, None, [*originals, *added, *notes]) - _NOTE_BYTES
    cut = ["value"]
    if room < 0:
        cut.append("headers")
        originals = []
        room = max_bytes - _record_bytes(key, None, [*added, *notes]) - _NOTE_BYTES
    if room < 0:
        cut.append("key")
        key = (key or b"")[: max(0, len(key or b"") + room)]
        room = 0
    value = (value or b"")[:room] if value is not None else None
    notes.append((DLQ_TRUNCATED, ",".join(cut).encode()))
    return DeadLetter(key, value, [*originals, *added, *notes])


_NOTE_BYTES = len(DLQ_TRUNCATED) + len("value,headers,key")


def _record_bytes(key: bytes | None, value: bytes | None, headers: Sequence[Header]) -> int:
    return (
        len(key or b"")
        + len(value or b"")
        + sum(len(name.encode("utf-8", "replace")) + len(data) for name, data in headers)
    )


# --- the adapter the Faust agent drives ---------------------------------------------------


class DeadLetterSink(Protocol):
    async def send(self, key: bytes | None, value: bytes | None, headers: list[Header]) -> None:
        """Return once the broker has durably accepted the record."""


class SpanSink(Protocol):
    async def write(self, rows: Sequence[Sequence[Any]]) -> SpanWrite:
        """Store rows idempotently (by event_id); rows that can never be stored are reported
        in :attr:`SpanWrite.refused`, any other failure raised."""


@dataclass(frozen=True)
class RetryPolicy:
    first_delay_s: float = 0.2
    max_delay_s: float = 10.0

    def delay(self, attempt: int) -> float:
        return float(min(self.max_delay_s, self.first_delay_s * 2**attempt))


@dataclass
class IngestCounters:
    batches: int = 0
    spans_written: int = 0
    duplicates_skipped: int = 0
    dead_lettered: int = 0
    sink_retries: int = 0


T = TypeVar("T")


class PipelineBugError(CoalmineError):
    """A write failed in a way no retry can mend (see :mod:`streams.failures`): the worker
    must stop, leaving the batch unacknowledged, rather than stall or lose it."""


class Retrier:
    """Retries a write with backoff for as long as the worker runs, if its failure is
    transient (see :mod:`streams.failures`); raises :class:`PipelineBugError` otherwise.

    Returns ``None`` only when the worker is stopping: the caller must then leave what it
    was writing unacknowledged, so it is delivered again after the restart.
    """

    def __init__(
        self,
        stopping: Callable[[], bool],
        policy: RetryPolicy,
        health: HealthState | None = None,
    ) -> None:
        """``health`` learns of every failing and succeeding attempt, for ``/health``."""
        self._stopping = stopping
        self._policy = policy
        self._health = health
        self.retries = 0

    async def __call__(self, what: str, attempt_once: Callable[[], Awaitable[T]]) -> T | None:
        if self._health is not None:
            attempt_once = self._health.observed(what, attempt_once)
        attempt = 0
        while True:
            try:
                return await attempt_once()
            except Exception as exc:
                failure = classify(exc)
                if failure is not Failure.TRANSIENT:
                    raise PipelineBugError(
                        f"{what} failed and retrying cannot help ({failure.value}): {one_line(exc)}"
                    ) from exc
                if self._stopping():
                    log.warning("%s failed while stopping; left unacknowledged", what)
                    return None
                delay = self._policy.delay(attempt)
                self.retries += 1
                log.error("%s failed (%s); retrying in %.1fs", what, one_line(exc), delay)
                await asyncio.sleep(delay)
                attempt += 1


class IngestProcessor:
    """Writes one batch durably: dead letters to Kafka, rows to ClickHouse, then returns.

    Transient failures are retried with backoff for as long as the worker runs. ``process``
    returns ``None`` only when the worker is stopping before the batch was stored: the caller
    must then not acknowledge it, so it is delivered again after restart. It raises
    :class:`PipelineBugError` when a write fails for good; the worker must then stop.
    """

    def __init__(
        self,
        spans: SpanSink,
        dead_letters: DeadLetterSink,
        prices: PriceTable,
        stopping: Callable[[], bool],
        *,
        retry: RetryPolicy | None = None,
        max_clock_skew_s: float = 30.0,
        retention_days: int = 0,
        clock: Callable[[], float] = time.time,
        health: HealthState | None = None,
    ) -> None:
        """``retention_days``: how long ``coalmine.spans`` keeps a span (0: forever)."""
        self._spans = spans
        self._dead_letters = dead_letters
        self._prices = prices
        self._retry = Retrier(stopping, retry or RetryPolicy(), health)
        self._max_clock_skew = timedelta(seconds=max_clock_skew_s)
        self._retention = timedelta(days=retention_days) if retention_days > 0 else None
        self._clock = clock
        # A producer sending garbage must not flood the worker's log; the DLQ has every one.
        self._warn_rejected = RateLimitedLog(logging.WARNING, interval_s=5.0, log=log)
        self.counters = IngestCounters()

    async def process(self, messages: Sequence[RawMessage]) -> list[Sequence[Any]] | None:
        """Store a batch; returns the rows whose span this batch's messages own (see
        :func:`owned_rows`), or ``None`` when the worker stopped before it was stored."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        routed = route(
            messages, self._prices, TimeBounds.at(now, self._max_clock_skew, self._retention)
        )
        if not await self._dead_letter(routed.rejected):
            return None
        written = await self._retry("ClickHouse insert", lambda: self._spans.write(routed.rows))
        if written is None:
            return None
        by_position = {(m.partition, m.offset): m for m in messages}
        refused = [Rejection(by_position[p], reason) for p, reason in written.refused.items()]
        if not await self._dead_letter(refused):
            return None
        self.counters.batches += 1
        self.counters.spans_written += written.inserted
        self.counters.duplicates_skipped += len(routed.rows) - written.inserted - len(refused)
        self.counters.dead_lettered += len(routed.rejected) + len(refused)
        self.counters.sink_retries = self._retry.retries
        return owned_rows(routed.rows, written.owners)

    async def _dead_letter(self, rejections: Sequence[Rejection]) -> bool:
        """Send the rejections; ``False`` when the worker stopped before they were all sent."""
        if not rejections:
            return True
        for rejection in rejections:
            self._warn_rejected(
                "dead-lettering %s[%d]@%d: %s",
                rejection.message.topic,
                rejection.message.partition,
                rejection.message.offset,
                rejection.reason,
            )
        letters = [dead_letter(r) for r in rejections]
        return await self._retry("dead-letter send", lambda: self._send(letters)) is not None

    async def _send(self, letters: Sequence[DeadLetter]) -> bool:
        # All in flight at once; a retry sends the whole set again (the DLQ is at-least-once).
        await asyncio.gather(*(self._dead_letters.send(d.key, d.value, d.headers) for d in letters))
        return True


@dataclass
class ProgressLog:
    """Logs the ingest counters at most every ``interval_s`` seconds of the given clock."""

    started: float
    interval_s: float
    last: float | None = None

    def maybe_log(self, counters: IngestCounters, now: float) -> bool:
        if self.last is not None and now - self.last < self.interval_s:
            return False
        self.last = now
        log.info(rate_line(counters, now - self.started))
        return True


def rate_line(counters: IngestCounters, elapsed_s: float) -> str:
    rate = counters.spans_written / elapsed_s if elapsed_s > 0 else 0.0
    return (
        f"ingested {counters.spans_written} spans ({rate:.0f}/s), "
        f"{counters.dead_lettered} dead-lettered, "
        f"{counters.duplicates_skipped} duplicates skipped, {counters.sink_retries} retries"
    )
