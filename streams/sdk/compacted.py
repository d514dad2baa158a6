"""Reading a state topic (compacted ``coalmine.versions``, ``coalmine.deployments``) from its
beginning to its end, without a consumer group: every caller sees every record, and nothing
is committed. Registration and the ``versions`` commands read ``coalmine.versions`` this way;
a router or the controller rebuilds its state the same way before it follows the topic.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from streams.errors import CoalmineError

FETCH_WAIT_MS = 10
CONSUME_WAIT_S = 0.02


class TopicReadError(CoalmineError):
    """The topic could not be read to its end: the broker does not answer, or took too long."""


@dataclass(frozen=True)
class TopicRecord:
    """One record as read: ``value`` None is a tombstone."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def read_to_end(
    config: Mapping[str, Any], topic: str, timeout_s: float = 30.0
) -> list[TopicRecord]:
    """Every record of every partition of ``topic``, in offset order per partition, up to
    (at least) the end offsets the partitions had when called. A topic that does not exist
    reads as empty.

    ``config``: the librdkafka connection settings
    (:func:`streams.sdk.kafka_security.client_config`). Raises :class:`TopicReadError` when
    the broker does not answer or the end is not reached within ``timeout_s``.
    """
    consumer = Consumer(
        {
            **config,
            # Required by the client, never joined: partitions are assigned, not subscribed,
            # and nothing is committed.
            "group.id": f"coalmine-reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            # A reader waits for the end, not for more records: the broker's default wait for
            # a fuller fetch (500 ms) would be most of a command's time.
            "fetch.wait.max.ms": FETCH_WAIT_MS,
        }
    )
    try:
        return _read(consumer, topic, time.monotonic() + timeout_s, timeout_s)
    except KafkaException as exc:
        where = config.get("bootstrap.servers")
        raise TopicReadError(f"cannot read {topic} from {where}: {exc.args[0].str()}") from None
    finally:
        consumer.close()


def _read(consumer: Consumer, topic: str, deadline: float, timeout_s: float) -> list[TopicRecord]:
    metadata = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if metadata is None or metadata.error is not None:
        if metadata is None or metadata.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return []
        raise TopicReadError(f"cannot read {topic}: {metadata.error.str()}")
    waiting: set[int] = set()
    for partition in metadata.partitions:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=max(0.1, deadline - time.monotonic())
        )
        if high > low:
            waiting.add(partition)
    if not waiting:
        return []
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(waiting)])
    records: list[TopicRecord] = []
    while waiting:
        if time.monotonic() > deadline:
            raise TopicReadError(
                f"{topic} was not read to its end within {timeout_s:.0f} s "
                f"({len(records)} records read)"
            )
        # consume() returns early only with a full batch: short waits, many rounds.
        for message in consumer.consume(num_messages=1000, timeout=CONSUME_WAIT_S):
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(error)
                waiting.discard(message.partition() or 0)
                continue
            records.append(
                TopicRecord(
                    message.partition() or 0,
                    message.offset() or 0,
                    message.key(),
                    message.value(),
                )
            )
    return records
