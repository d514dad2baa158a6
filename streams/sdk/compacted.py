"""Reading compacted topics (state: deployments, versions) from their beginning, without a
consumer group: the one implementation, :class:`PartitionReader`, used two ways.

* Synchronously (the controller, ``coalmine status``, the ``versions`` commands):
  :class:`CompactedReader` and :func:`read_to_end` read one topic up to the end it had when
  asked, records in order (a label's *first* version record is the version); :func:`latest`
  folds them into the table compaction converges to (the last value per key, None for a
  tombstone); :meth:`CompactedReader.catch_up` can be called again to follow the topic.
* In a background thread, record by record (the SDK's Router):
  :class:`~streams.sdk.follow.TopicFollower`.

No consumer group: each reader sees whole topics, commits nothing and joins nothing, so it
disturbs nobody. "The end" is a partition's high watermark when the reader assigned it (or
when :meth:`PartitionReader.mark_ends` was last called): what had been written by then.
This module needs only the standard library and confluent-kafka: the SDK uses it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from streams.errors import CoalmineError

BATCH_MAX = 500
"""Records :meth:`PartitionReader.read` returns at most at once."""

Table = dict[bytes, bytes | None]
T = TypeVar("T")
_SETTLING = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
    }
)
"""What a broker answers for a moment after it starts or a topic is created."""


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    key: bytes | None
    value: bytes | None
    """None: a tombstone (the key was deleted)."""
    partition: int = 0
    offset: int = 0
    timestamp_ms: int | None = None
    """The record's timestamp: the broker's append time on a topic configured with
    ``message.timestamp.type=LogAppendTime``; None when the broker gave none."""


def retrying(call: Callable[[], T], what: str, timeout_s: float) -> T:
    """``call()``, retried while Kafka answers with a transient error, for up to
    ``timeout_s``; then a :class:`CoalmineError` saying it could not ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            transient = error.retriable() or error.code() in _SETTLING
            if not transient or time.monotonic() > deadline:
                raise CoalmineError(f"cannot {what}: {error.str()}") from None
            time.sleep(0.2)


class PartitionReader:
    """A consumer that reads every partition of the topics given to :meth:`assign` from
    offset zero, and knows whether it has reached their ends.

    * :meth:`partitions` of a topic (none while it does not exist); :meth:`assign` them,
      each with its current end.
    * :meth:`read`: the next records of any of them (up to :data:`BATCH_MAX`, waiting only
      for the first); a record that comes with an error goes to ``on_error``.
    * :attr:`at_ends`: whether every assigned partition has been read up to its end.
    * :meth:`mark_ends`: take every partition's current end as the end to reach.

    :meth:`partitions`, :meth:`assign` and :meth:`mark_ends` ask the broker and raise
    :class:`KafkaException` when it does not answer (wrap them in :func:`retrying`, or try
    again later); :meth:`read` raises only what ``on_error`` raises. Not thread-safe: one
    thread uses a reader.
    ``config``: the connection (``client_config``) and any other librdkafka settings.
    """

    def __init__(
        self, config: dict[str, Any], *, name: str, on_error: Callable[[str], None]
    ) -> None:
        self._consumer = Consumer(
            {
                # librdkafka wants a group id even when nothing joins or commits.
                "group.id": f"{name}-{uuid.uuid4().hex}",
                **config,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": False,
                # A position the log no longer has: state is read from the start, never skipped.
                "auto.offset.reset": "earliest",
            }
        )
        self._on_error = on_error
        self._next: dict[tuple[str, int], int] = {}
        """Per assigned partition: the offset of the next record to read."""
        self._ends: dict[tuple[str, int], int] = {}

    @property
    def assigned(self) -> bool:
        return bool(self._next)

    @property
    def at_ends(self) -> bool:
        return all(self._next[where] >= end for where, end in self._ends.items())

    def partitions(self, topic: str, timeout_s: float) -> list[int]:
        """The partitions of ``topic``; none if it does not exist (yet)."""
        described = self._consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if described is None or not described.partitions:
            return []
        if described.error is not None:
            if described.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                return []
            raise KafkaException(described.error)
        return sorted(described.partitions)

    def assign(
        self,
        partitions: dict[str, list[int]],
        timeout_s: float,
        since_ms: int | None = None,
        *,
        from_end: bool = False,
    ) -> None:
        """Read these partitions (by topic) from the beginning up to their ends now, and on.
        All at once: the first fetch asks for all of them, so no topic's records wait for
        another's. ``since_ms``: from each partition's first record with a timestamp at or
        after it (ms since the epoch) instead of the beginning; ``from_end``: only what is
        written after their ends now."""
        where = [(topic, p) for topic, numbers in partitions.items() for p in numbers]
        ends = self._current_ends(where, timeout_s)  # before assigning: may raise
        if from_end:
            starts = dict(ends)
        elif since_ms is None:
            starts = dict.fromkeys(where, 0)
        else:
            starts = self._offsets_at(where, since_ms, ends, timeout_s)
        self._consumer.incremental_assign(
            [TopicPartition(t, p, starts[(t, p)] or OFFSET_BEGINNING) for t, p in where]
        )
        self._next.update(starts)
        self._ends.update(ends)

    def _offsets_at(
        self,
        partitions: list[tuple[str, int]],
        time_ms: int,
        ends: dict[tuple[str, int], int],
        timeout_s: float,
    ) -> dict[tuple[str, int], int]:
        """Each partition's first offset whose record is at or after ``time_ms``; its end
        when there is none."""
        asked = [TopicPartition(t, p, time_ms) for t, p in partitions]
        found = self._consumer.offsets_for_times(asked, timeout=timeout_s)
        return {
            (tp.topic, tp.partition): tp.offset
            if tp.offset >= 0
            else ends[(tp.topic, tp.partition)]
            for tp in found
        }

    def mark_ends(self, timeout_s: float) -> None:
        """The ends to reach are now every assigned partition's current end."""
        self._ends = self._current_ends(list(self._next), timeout_s)

    def _current_ends(
        self, partitions: list[tuple[str, int]], timeout_s: float
    ) -> dict[tuple[str, int], int]:
        ends = {}
        for topic, partition in partitions:
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout_s
            )
            ends[(topic, partition)] = high
        return ends

    def read(self, timeout_s: float) -> list[Record]:
        """The next record (waiting up to ``timeout_s``) and whatever else is already
        fetched. ``consume(n, timeout)`` alone would wait out its timeout for n records,
        adding the timeout to every change's latency."""
        first = self._consumer.poll(timeout_s)
        if first is None:
            if not self.at_ends:
                self._skip_unfilled_offsets()
            return []
        return self._records([first, *self._consumer.consume(BATCH_MAX - 1, 0)])

    def _skip_unfilled_offsets(self) -> None:
        """Offsets a record does not fill (transaction markers, tombstones compacted away at
        a partition's end) end no message: the position has passed them."""
        assignment = [TopicPartition(t, p) for t, p in self._next]
        for position in self._consumer.position(assignment):
            if position.offset >= 0:
                where = (position.topic, position.partition)
                self._next[where] = max(self._next[where], position.offset)

    def _records(self, messages: list[Message]) -> list[Record]:
        records = []
        for message in messages:
            error = message.error()
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if error is not None:
                self._on_error(f"reading {topic or 'a topic'}: {error.str()}")
            elif topic is not None and partition is not None and offset is not None:
                self._next[(topic, partition)] = offset + 1
                kind, stamp = message.timestamp()
                records.append(
                    Record(
                        topic,
                        message.key(),
                        message.value(),
                        partition,
                        offset,
                        None if kind == TIMESTAMP_NOT_AVAILABLE else stamp,
                    )
                )
        return records

    def close(self) -> None:
        self._consumer.close()


class CompactedReader:
    """``topic`` read from its beginning: :meth:`catch_up` returns what was written since the
    last call, up to the ends the partitions have when called. Each call gives up with a
    :class:`CoalmineError` after ``timeout_s``. ``missing_ok``: a topic that does not exist
    reads as empty (and stays so for this reader) instead of being waited for."""

    def __init__(
        self,
        consumer_config: dict[str, Any],
        topic: str,
        timeout_s: float,
        *,
        missing_ok: bool = False,
    ) -> None:
        self.topic = topic
        self.timeout_s = timeout_s
        self._missing_ok = missing_ok
        self._reader = PartitionReader(consumer_config, name="coalmine-reader", on_error=self._fail)
        try:
            retrying(self._assign, f"read {topic}", timeout_s)
        except CoalmineError:
            self._reader.close()
            raise

    def _assign(self) -> None:
        partitions = self._reader.partitions(self.topic, self.timeout_s)
        if not partitions:
            if self._missing_ok:
                return
            raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
        self._reader.assign({self.topic: partitions}, self.timeout_s)

    def _fail(self, problem: str) -> None:
        raise CoalmineError(f"cannot read {self.topic}: {problem}")

    def catch_up(self) -> list[Record]:
        """The records written since the last call, in offset order per partition."""
        if not self._reader.assigned:
            return []
        deadline = time.monotonic() + self.timeout_s
        retrying(
            lambda: self._reader.mark_ends(self.timeout_s),
            f"read the end of {self.topic}",
            self.timeout_s,
        )
        records: list[Record] = []
        while not self._reader.at_ends:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CoalmineError(
                    f"{self.topic} was not read to its end within {self.timeout_s:.0f} s "
                    f"({len(records)} records read)"
                )
            records.extend(self._reader.read(min(left, 0.5)))
        return records

    def close(self) -> None:
        self._reader.close()


def read_to_end(
    consumer_config: dict[str, Any], topic: str, timeout_s: float = 30.0
) -> list[Record]:
    """Every record of ``topic`` as of now, in offset order per partition; a topic that does
    not exist reads as empty. Raises :class:`CoalmineError` when the broker does not answer
    or the end is not reached within ``timeout_s``."""
    reader = CompactedReader(consumer_config, topic, timeout_s, missing_ok=True)
    try:
        return reader.catch_up()
    finally:
        reader.close()


def latest(records: list[Record]) -> Table:
    """The last value of every key (None: deleted), as compaction leaves the topic."""
    return {record.key: record.value for record in records if record.key is not None}
