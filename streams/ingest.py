"""Ingest: decode and validate trace events, price them, and route each to spans or dead letters.

Everything up to :class:`IngestProcessor` is pure and unit-tested without I/O. The processor
is the adapter the Faust agent calls with each batch; it never raises, because an exception
escaping a Faust agent gets the batch acknowledged and lost.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from schemas.trace import MAX_EVENT_BYTES, TraceEvent
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
        return TraceEvent.model_validate_json(value)
    except ValidationError as exc:
        raise InvalidEventError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """One bounded line naming each failing field: ``input_tokens: Input should be ...``."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in error["loc"]) or "event"
        parts.append(f"{where}: {error['msg']}")
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
    "kafka_partition",
    "kafka_offset",
)


def to_row(event: TraceEvent, prices: PriceTable, partition: int, offset: int) -> tuple[Any, ...]:
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
        partition,
        offset,
    )


def _attribute_text(value: str | bool | int | float) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@dataclass
class RoutedBatch:
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


def route(messages: Sequence[RawMessage], prices: PriceTable, latest_end: datetime) -> RoutedBatch:
    """Split a batch into span rows and rejections; one bad message never affects another.

    A span ending after ``latest_end`` (now plus the allowed clock skew) is rejected: its
    producer's clock is wrong, and it would land in a window that has not happened yet.
    """
    routed = RoutedBatch()
    for message in messages:
        try:
            event = decode(message.value)
            check_not_future(event, latest_end)
        except InvalidEventError as exc:
            routed.rejected.append(Rejection(message, str(exc)))
            continue
        routed.rows.append(to_row(event, prices, message.partition, message.offset))
    return routed


def check_not_future(event: TraceEvent, latest_end: datetime) -> None:
    if event.end_time > latest_end:
        ahead = (event.end_time - latest_end).total_seconds()
        raise InvalidEventError(
            f"end_time {event.end_time.isoformat()} is {ahead:.3f}s beyond the allowed clock "
            f"skew (latest accepted {latest_end.isoformat()}); check the producer's clock"
        )


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

    @classmethod
    def all_new(cls, rows: Sequence[Sequence[Any]]) -> SpanWrite:
        """Every row inserted, each owned by its own message (sinks that keep nothing)."""
        return cls(len(rows), {row[_EVENT_ID]: (row[_PARTITION], row[_OFFSET]) for row in rows})


def owned_rows(rows: Sequence[Sequence[Any]], owners: Mapping[Any, Owner]) -> list[Sequence[Any]]:
    """The rows whose message is the one their stored span came from.

    A message re-delivered after a crash owns its span; a second message carrying an event id
    already stored from another message (a duplicate sent twice) does not, so aggregates
    count each stored span once.
    """
    return [row for row in rows if owners.get(row[_EVENT_ID]) == (row[_PARTITION], row[_OFFSET])]


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


# --- the adapter the Faust agent drives ---------------------------------------------------


class DeadLetterSink(Protocol):
    async def send(self, key: bytes | None, value: bytes | None, headers: list[Header]) -> None:
        """Return once the broker has durably accepted the record."""


class SpanSink(Protocol):
    async def write(self, rows: Sequence[Sequence[Any]]) -> SpanWrite:
        """Store rows idempotently (by event_id)."""


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


class Retrier:
    """Retries a write with backoff for as long as the worker runs.

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
                if self._stopping():
                    log.warning("%s failed while stopping; left unacknowledged", what)
                    return None
                delay = self._policy.delay(attempt)
                self.retries += 1
                log.error("%s failed (%s); retrying in %.1fs", what, exc, delay)
                await asyncio.sleep(delay)
                attempt += 1


class IngestProcessor:
    """Writes one batch durably: dead letters to Kafka, rows to ClickHouse, then returns.

    Failures are retried with backoff for as long as the worker runs. ``process`` returns
    ``None`` only when the worker is stopping before the batch was stored: the caller must
    then not acknowledge it, so it is delivered again after restart.
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
        clock: Callable[[], float] = time.time,
        health: HealthState | None = None,
    ) -> None:
        self._spans = spans
        self._dead_letters = dead_letters
        self._prices = prices
        self._retry = Retrier(stopping, retry or RetryPolicy(), health)
        self._max_clock_skew = timedelta(seconds=max_clock_skew_s)
        self._clock = clock
        # A producer sending garbage must not flood the worker's log; the DLQ has every one.
        self._warn_rejected = RateLimitedLog(logging.WARNING, interval_s=5.0, log=log)
        self.counters = IngestCounters()

    async def process(self, messages: Sequence[RawMessage]) -> list[Sequence[Any]] | None:
        """Store a batch; returns the rows whose span this batch's messages own (see
        :func:`owned_rows`), or ``None`` when the worker stopped before it was stored."""
        latest_end = datetime.fromtimestamp(self._clock(), UTC) + self._max_clock_skew
        routed = route(messages, self._prices, latest_end)
        for rejection in routed.rejected:
            self._warn_rejected(
                "dead-lettering %s[%d]@%d: %s",
                rejection.message.topic,
                rejection.message.partition,
                rejection.message.offset,
                rejection.reason,
            )
        if routed.rejected:
            sent = await self._retry(
                "dead-letter send", functools.partial(self._send, routed.rejected)
            )
            if sent is None:
                return None
        written = await self._retry("ClickHouse insert", lambda: self._spans.write(routed.rows))
        if written is None:
            return None
        self.counters.batches += 1
        self.counters.spans_written += written.inserted
        self.counters.duplicates_skipped += len(routed.rows) - written.inserted
        self.counters.dead_lettered += len(routed.rejected)
        self.counters.sink_retries = self._retry.retries
        return owned_rows(routed.rows, written.owners)

    async def _send(self, rejections: Sequence[Rejection]) -> bool:
        # All in flight at once; a retry sends the whole set again (the DLQ is at-least-once).
        await asyncio.gather(
            *(
                self._dead_letters.send(r.message.key, r.message.value, dead_letter_headers(r))
                for r in rejections
            )
        )
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
