"""Ingest: decode and validate trace events, price them, and route each to spans or dead letters.

Pure and unit-tested without I/O; :class:`~streams.runtime.processor.IngestProcessor` is the
adapter that stores what :func:`route` decides.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from uuid import UUID

from pydantic import ValidationError

from schemas.framing import MAX_MESSAGE_BYTES, MAX_SPANS_PER_MESSAGE, split_spans
from schemas.topics import (
    DLQ_ORIGINAL_KEY_BYTES,
    DLQ_ORIGINAL_VALUE_BYTES,
    DLQ_REASON,
    DLQ_SOURCE_INDEX,
    DLQ_SOURCE_OFFSET,
    DLQ_SOURCE_PARTITION,
    DLQ_SOURCE_TOPIC,
    DLQ_TRUNCATED,
)
from schemas.trace import MAX_EVENT_BYTES, PRINTABLE_NOT_BLANK, TraceEvent
from streams.ingest.pricing import PriceTable

Header = tuple[str, bytes]
MAX_REASON_CHARS = 1000

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
    timestamp_ms: int | None = None
    """The record's timestamp (the broker's append time on a LogAppendTime topic)."""


class InvalidEventError(ValueError):
    """A message that can never become a span; the text is the dead-letter reason."""


@dataclass(frozen=True)
class Rejection:
    """Why a message, or one span of a batch (``index``), can never be stored."""

    message: RawMessage
    reason: str
    index: int | None = None
    """The span's position in its batch (see :mod:`schemas.framing`); ``None``: the whole
    message is rejected."""
    span: bytes | None = None
    """The span's bytes, when ``index`` is set."""

    @property
    def value(self) -> bytes | None:
        """What is dead-lettered: the span's bytes, or the whole message's."""
        return self.message.value if self.index is None else self.span


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
    if not _surely_no_duplicate_keys(value, event):
        _check_no_duplicate_keys(value)
    return event


def _surely_no_duplicate_keys(value: bytes, event: TraceEvent) -> bool:
    """Whether counting proves ``value`` names no key twice, without a second parse (~1 µs
    against ~5 µs for the parse).

    Every key of an accepted event is a top-level field or an attribute (attribute values are
    scalars), so the event holds ``len(model_fields_set) + len(attributes)`` distinct keys.
    With JSON whitespace deleted, each key's closing quote is followed right away by its
    colon, so the value holds at most as many keys as ``":`` pairs. If the two counts are
    equal, no key can appear twice. When they differ (a duplicate, or ``\":`` inside a
    string), the full check decides.
    """
    pairs = value.translate(None, _JSON_WHITESPACE).count(b'":')
    return pairs == len(event.model_fields_set) + len(event.attributes)


_JSON_WHITESPACE = b" \t\r\n"


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
    try:
        _DUPLICATE_KEYS.decode(value.decode("utf-8"))
    except InvalidEventError:
        raise
    except (ValueError, RecursionError) as exc:  # what pydantic took, Python's parser did not
        raise InvalidEventError(f"JSON that not every parser reads alike: {exc}") from None


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


class SpanRow(NamedTuple):
    """A ``coalmine.spans`` row, read by name. Being a tuple, it goes to the insert as it is
    (:data:`streams.storage.clickhouse.SPAN_COLUMNS` names the table's columns in this order)."""

    event_id: UUID
    trace_id: str
    span_id: str
    parent_span_id: str
    agent: str
    version: str
    environment: str
    tenant: str
    kind: str
    name: str
    start_time: datetime
    end_time: datetime
    duration_ms: float
    status: str
    error_type: str
    error_message: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    reasoning_tokens: int
    cost_usd: float
    cost_source: str
    tool_name: str
    task_completed: bool | None
    quality_score: float | None
    attributes: dict[str, str]
    content_hash: int
    kafka_partition: int
    kafka_offset: int
    kafka_index: int
    """The span's position in its message (0 for a message of one span)."""


def content_hash(value: bytes) -> int:
    """64 bits of the message's bytes: a second message with a stored event_id and another
    hash is a conflict, not a re-delivery."""
    return int.from_bytes(hashlib.blake2b(value, digest_size=8).digest(), "little")


def to_row(
    event: TraceEvent,
    prices: PriceTable,
    partition: int,
    offset: int,
    value_hash: int = 0,
    *,
    index: int = 0,
) -> SpanRow:
    """The ``coalmine.spans`` row of an event."""
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
    # tuple.__new__ skips the keyword-capable constructor NamedTuple generates (a Python
    # call with 31 arguments, +0.7 us per event); the values are in field order.
    return tuple.__new__(
        SpanRow,
        (
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
            index,
        ),
    )


def _attribute_text(value: str | bool | int | float) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@dataclass
class RoutedBatch:
    rows: list[SpanRow] = field(default_factory=list)
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
    """Split a batch into span rows and rejections; one bad message never affects another,
    nor one bad span of a message (:mod:`schemas.framing`) its neighbours.

    A span ending after ``bounds.latest_end`` is rejected: its producer's clock is wrong, and
    it would land in a window that has not happened yet. One starting before
    ``bounds.earliest_start`` is rejected: the tables cannot hold it, or would drop it.
    """
    routed = RoutedBatch()
    rows, rejected = routed.rows, routed.rejected
    for message in messages:
        value = message.value
        if value is not None and len(value) > MAX_MESSAGE_BYTES:
            reason = f"message is {len(value)} bytes; the limit is {MAX_MESSAGE_BYTES}"
            rejected.append(Rejection(message, reason))
            continue
        spans = None if value is None else split_spans(value)
        if spans is None:
            try:
                event = decode(value)
                bounds.check(event)
            except InvalidEventError as exc:
                rejected.append(Rejection(message, str(exc)))
                continue
            rows.append(
                to_row(event, prices, message.partition, message.offset, content_hash(value or b""))
            )
            continue
        if len(spans) > MAX_SPANS_PER_MESSAGE:
            reason = f"message holds {len(spans)} spans; the limit is {MAX_SPANS_PER_MESSAGE}"
            rejected.append(Rejection(message, reason))
            continue
        for index, span in enumerate(spans):
            try:
                event = decode(span)
                bounds.check(event)
            except InvalidEventError as exc:
                rejected.append(Rejection(message, str(exc), index, span))
                continue
            rows.append(
                to_row(
                    event,
                    prices,
                    message.partition,
                    message.offset,
                    content_hash(span),
                    index=index,
                )
            )
    return routed


def span_rejection(message: RawMessage, index: int, reason: str) -> Rejection:
    """The rejection of span ``index`` of ``message`` (the whole message when it is not a
    batch), for a stored row's span refused later."""
    spans = split_spans(message.value or b"")
    if spans is None:
        return Rejection(message, reason)
    return Rejection(message, reason, index, spans[index])


Owner = tuple[int, int, int]
"""(Kafka partition, offset, index in the message) of the span a stored row came from."""
MessagePosition = tuple[int, int]
"""(Kafka partition, offset) of a message."""


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
    def all_new(cls, rows: Sequence[SpanRow]) -> SpanWrite:
        """Every row inserted, each owned by its own message (sinks that keep nothing)."""
        return cls(len(rows), {row.event_id: position(row) for row in rows})


def position(row: SpanRow) -> Owner:
    """The (partition, offset, index) of the span a row came from."""
    return (row.kafka_partition, row.kafka_offset, row.kafka_index)


def message_position(row: SpanRow) -> MessagePosition:
    """The (partition, offset) of the message a span row came from."""
    return (row.kafka_partition, row.kafka_offset)


def owned_rows(rows: Sequence[SpanRow], owners: Mapping[Any, Owner]) -> list[SpanRow]:
    """The rows that are the span their stored row came from.

    A message re-delivered after a crash owns its spans; a second message, or a second span
    of the same message, carrying an event id already stored from another span (a duplicate
    sent twice) does not, so aggregates count each stored span once.
    """
    return [row for row in rows if owners.get(row.event_id) == position(row)]


def dead_letter_headers(rejection: Rejection) -> list[Header]:
    """The original headers plus why and where from (and which span of a batch), so the
    message or span can be replayed."""
    message = rejection.message
    headers = [
        *message.headers,
        (DLQ_REASON, rejection.reason.encode("utf-8", errors="replace")),
        (DLQ_SOURCE_TOPIC, message.topic.encode()),
        (DLQ_SOURCE_PARTITION, str(message.partition).encode()),
        (DLQ_SOURCE_OFFSET, str(message.offset).encode()),
    ]
    if rejection.index is not None:
        headers.append((DLQ_SOURCE_INDEX, str(rejection.index).encode()))
    return headers


@dataclass(frozen=True)
class DeadLetter:
    key: bytes | None
    value: bytes | None
    headers: list[Header]


def dead_letter(rejection: Rejection, max_bytes: int = DLQ_MAX_RECORD_BYTES) -> DeadLetter:
    """The dead-letter record of a rejection (of one span of a batch: that span alone as the
    value), cut to fit the dead-letter topic.

    A source topic may hold records larger than the DLQ accepts (a producer's compression
    lets a large value in): then the value, and if need be the key and the original headers,
    are cut, and headers say so and give the original sizes. Otherwise the record is the
    original key, value and headers plus the reason and the source.
    """
    message = rejection.message
    key, value = message.key, rejection.value
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
