"""Reading a compacted topic as a table: every partition from the beginning up to the end
it had when asked, the latest value per key (None for a tombstone).

No consumer group: each reader sees the whole topic, commits nothing and joins nothing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from streams.errors import CoalmineError

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


class CompactedReader:
    """A consumer assigned to every partition of ``topic`` from the beginning; :meth:`catch_up`
    reads what has been written so far (the high watermarks when called) into :attr:`table`,
    and can be called again to follow the topic."""

    def __init__(self, consumer_config: dict[str, Any], topic: str, timeout_s: float) -> None:
        self.topic = topic
        self.timeout_s = timeout_s
        self.table: Table = {}
        self._consumer = Consumer(
            {
                # librdkafka wants a group id even when nothing joins or commits.
                "group.id": f"coalmine-reader-{uuid.uuid4().hex}",
                **consumer_config,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": False,
            }
        )
        self._next: dict[int, int] = {}
        try:
            partitions = retrying(self._partitions, f"read {topic}", timeout_s)
        except CoalmineError:
            self._consumer.close()
            raise
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self._next = dict.fromkeys(partitions, 0)

    def _partitions(self) -> list[int]:
        metadata = self._consumer.list_topics(self.topic, timeout=self.timeout_s).topics[self.topic]
        if metadata.error is not None:
            raise KafkaException(metadata.error)
        return sorted(metadata.partitions)

    def catch_up(self) -> Table:
        """Read up to the current end of every partition; returns :attr:`table`."""
        deadline = time.monotonic() + self.timeout_s
        ends = {}
        for partition in self._next:
            _, high = retrying(
                partial(
                    self._consumer.get_watermark_offsets,
                    TopicPartition(self.topic, partition),
                    timeout=self.timeout_s,
                ),
                f"read the end of {self.topic}",
                self.timeout_s,
            )
            ends[partition] = high
        while any(self._next[p] < end for p, end in ends.items()):
            left = deadline - time.monotonic()
            if left <= 0:
                raise CoalmineError(f"reading {self.topic} to its end took over {self.timeout_s} s")
            messages = self._consumer.consume(num_messages=1000, timeout=min(left, 0.5))
            if not messages:
                # Offsets a record does not fill (transaction markers) end no message: the
                # position has passed them.
                for position in self._consumer.position(self._assignment()):
                    if position.offset >= 0:
                        self._next[position.partition] = position.offset
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise CoalmineError(f"cannot read {self.topic}: {error.str()}")
                key, at, offset = message.key(), message.partition(), message.offset()
                if key is not None:
                    self.table[key] = message.value()
                if at is not None and offset is not None:
                    self._next[at] = offset + 1
        return self.table

    def _assignment(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in self._next]

    def close(self) -> None:
        self._consumer.close()


def read_to_end(consumer_config: dict[str, Any], topic: str, timeout_s: float) -> Table:
    """The latest value of every key of ``topic`` as of now (None: deleted)."""
    reader = CompactedReader(consumer_config, topic, timeout_s)
    try:
        return reader.catch_up()
    finally:
        reader.close()
