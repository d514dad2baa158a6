"""Reading a state topic (compacted ``coalmine.versions``, ``coalmine.deployments``) from its
beginning to its end, without a consumer group: every reader sees every record, commits
nothing and joins nothing. The ``versions`` and deployment commands read a topic once with
:func:`read_to_end`; the controller keeps a :class:`CompactedReader` and catches up again
before it checks a version. :func:`latest` folds records into the table compaction converges
to (the last value per key).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from streams.errors import CoalmineError

FETCH_WAIT_MS = 10
CONSUME_WAIT_S = 0.02
"""consume() returns early only with a full batch: short waits, many rounds."""

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


class TopicReadError(CoalmineError):
    """The topic could not be read to its end: the broker does not answer, or took too long."""


@dataclass(frozen=True)
class TopicRecord:
    """One record as read: ``value`` None is a tombstone."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def retrying(call: Callable[[], T], what: str, timeout_s: float) -> T:
    """``call()``, retried while Kafka answers with a transient error, for up to
    ``timeout_s``; then a :class:`TopicReadError` saying it could not ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            transient = error.retriable() or error.code() in _SETTLING
            if not transient or time.monotonic() > deadline:
                raise TopicReadError(f"cannot {what}: {error.str()}") from None
            time.sleep(0.2)


class CompactedReader:
    """A consumer assigned to every partition of ``topic`` from the beginning; :meth:`catch_up`
    returns what was written since the last call, up to the ends the partitions have when
    called. ``missing_ok``: a topic that does not exist reads as empty (and stays so for this
    reader) instead of being waited for."""

    def __init__(
        self,
        consumer_config: Mapping[str, Any],
        topic: str,
        timeout_s: float,
        *,
        missing_ok: bool = False,
    ) -> None:
        self.topic = topic
        self.timeout_s = timeout_s
        self._consumer = Consumer(
            {
                # librdkafka wants a group id even when nothing joins or commits.
                "group.id": f"coalmine-reader-{uuid.uuid4().hex}",
                "fetch.wait.max.ms": FETCH_WAIT_MS,
                **consumer_config,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": False,
            }
        )
        try:
            partitions = retrying(partial(self._partitions, missing_ok), f"read {topic}", timeout_s)
        except CoalmineError:
            self._consumer.close()
            raise
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self._next = dict.fromkeys(partitions, 0)

    def _partitions(self, missing_ok: bool) -> list[int]:
        metadata = self._consumer.list_topics(self.topic, timeout=self.timeout_s).topics[self.topic]
        if metadata.error is not None:
            if missing_ok and metadata.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                return []
            raise KafkaException(metadata.error)
        return sorted(metadata.partitions)

    def catch_up(self) -> list[TopicRecord]:
        """The records written since the last call, in offset order per partition."""
        deadline = time.monotonic() + self.timeout_s
        ends = {partition: self._end(partition) for partition in self._next}
        records: list[TopicRecord] = []
        while any(self._next[p] < end for p, end in ends.items()):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TopicReadError(
                    f"{self.topic} was not read to its end within {self.timeout_s:.0f} s "
                    f"({len(records)} records read)"
                )
            messages = self._consumer.consume(num_messages=1000, timeout=CONSUME_WAIT_S)
            if not messages:
                # Offsets a record does not fill (transaction markers) end no message: the
                # position has passed them.
                for position in self._consumer.position(self._assignment()):
                    if position.offset >= 0:
                        self._next[position.partition] = position.offset
            for message in messages:
                error = message.error()
                if error is not None:
                    raise TopicReadError(f"cannot read {self.topic}: {error.str()}")
                partition, offset = message.partition() or 0, message.offset() or 0
                records.append(TopicRecord(partition, offset, message.key(), message.value()))
                self._next[partition] = offset + 1
        return records

    def _end(self, partition: int) -> int:
        _, high = retrying(
            partial(
                self._consumer.get_watermark_offsets,
                TopicPartition(self.topic, partition),
                timeout=self.timeout_s,
            ),
            f"read the end of {self.topic}",
            self.timeout_s,
        )
        end: int = high
        return end

    def _assignment(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in self._next]

    def close(self) -> None:
        self._consumer.close()


def read_to_end(
    consumer_config: Mapping[str, Any], topic: str, timeout_s: float = 30.0
) -> list[TopicRecord]:
    """Every record of ``topic`` as of now, in offset order per partition; a topic that does
    not exist reads as empty. Raises :class:`TopicReadError` when the broker does not answer
    or the end is not reached within ``timeout_s``."""
    reader = CompactedReader(consumer_config, topic, timeout_s, missing_ok=True)
    try:
        return reader.catch_up()
    finally:
        reader.close()


def latest(records: Iterable[TopicRecord]) -> Table:
    """The last value of every key (None: deleted), as compaction leaves the topic."""
    return {record.key: record.value for record in records if record.key is not None}
