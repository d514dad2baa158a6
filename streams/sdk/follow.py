"""Reading a compacted topic from its beginning and following it: the :class:`TopicFollower`.

Compacted topics hold state (deployments, versions): a reader wants every record from offset
zero, then each new one as it comes, and to know when it has seen everything that was there
when it started ("caught up"). No consumer group: the follower assigns every partition itself,
commits nothing, and so neither joins a group nor disturbs anybody else's; each process keeps
its own position in memory. (confluent-kafka insists on a ``group.id`` even for assign-only
consumers; a random one, never joined, satisfies it.)

Broker trouble is logged (rate-limited) and waited out: the consumer reconnects by itself and
resumes where it was, while whatever the follower fed its owner stays as it was.
This module needs only the standard library and confluent-kafka: the SDK uses it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streams.logs import RateLimitedLog
from streams.sdk.kafka_security import client_config
from streams.sdk.settings import SdkSettings

logger = logging.getLogger("coalmine.sdk.follow")

BATCH_MAX = 500
"""Records handed over at once: the owner rebuilds its state once per batch, not per record."""
POLL_TIMEOUT_S = 0.1
"""How long one poll waits for a record; also how soon :meth:`TopicFollower.close` is seen."""
METADATA_TIMEOUT_S = 5.0
REDISCOVER_S = 5.0
"""How often topics that did not exist yet (or whose metadata failed) are looked up again."""


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    key: bytes | None
    value: bytes | None
    """None: a tombstone (the key was deleted)."""


RecordsHandler = Callable[[list[Record]], None]


class TopicFollower:
    """Follows ``topics`` from their beginning in a daemon thread, handing records to
    ``on_records`` in order (per partition), a batch at a time, from that thread.

    :attr:`caught_up` is set after the batch that reached the end of every partition of every
    topic that existed has been handed over (a topic that does not exist yet counts as empty,
    and is looked up again every few seconds). ``on_records`` must not raise; if it does, the
    error is logged and the follower goes on. :meth:`close` stops the thread and the consumer.
    """

    def __init__(
        self,
        settings: SdkSettings,
        topics: Sequence[str],
        on_records: RecordsHandler,
        *,
        name: str,
        on_caught_up: Callable[[], None] | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        self._topics = tuple(topics)
        self._on_records = on_records
        self._on_caught_up = on_caught_up
        self._config: dict[str, Any] = {
            **client_config(settings),
            "client.id": name,
            "group.id": f"{name}-{uuid.uuid4().hex}",  # required by the client, never joined
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "logger": RateLimitedLog(logging.getLogger("coalmine.sdk.librdkafka"), logging.WARNING),
            **(extra_config or {}),
        }
        self.caught_up = threading.Event()
        self._stop = threading.Event()
        self._warn = RateLimitedLog(logger, logging.WARNING)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 5.0) -> None:
        """Stop following; returns once the consumer is closed (or after ``timeout``)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        consumer = Consumer(self._config)
        try:
            self._follow(consumer)
        finally:
            consumer.close()

    def _follow(self, consumer: Consumer) -> None:
        unassigned = set(self._topics)
        unanswered = set(self._topics)  # lookups that failed so far (broker down)
        at_end: dict[tuple[str, int], bool] = {}
        next_lookup = 0.0
        while not self._stop.is_set():
            if unassigned and time.monotonic() >= next_lookup:
                next_lookup = time.monotonic() + REDISCOVER_S
                found, answered = self._assign_existing(consumer, unassigned)
                unanswered -= answered
                unassigned -= found.keys()
                at_end.update({(t, p): False for t, parts in found.items() for p in parts})
            if at_end:
                records = self._records(_next_batch(consumer), at_end)
                if records:
                    self._hand_over(records)
            else:
                self._stop.wait(POLL_TIMEOUT_S)
            # A topic that does not exist yet counts as empty, one not looked up yet does not.
            if not unanswered and all(at_end.values()) and not self.caught_up.is_set():
                self.caught_up.set()
                if self._on_caught_up is not None:
                    self._on_caught_up()

    def _assign_existing(
        self, consumer: Consumer, topics: set[str]
    ) -> tuple[dict[str, list[int]], set[str]]:
        """Assign every partition of those ``topics`` that exist, from offset zero; returns
        them, and the topics whose lookup was answered (found or known missing)."""
        found: dict[str, list[int]] = {}
        answered = set()
        for topic in sorted(topics):
            try:
                metadata = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S)
            except KafkaException as exc:
                self._warn("cannot read the metadata of %s yet: %s", topic, exc.args[0])
                continue
            answered.add(topic)
            described = metadata.topics.get(topic)
            if described is None or described.error is not None or not described.partitions:
                continue
            found[topic] = sorted(described.partitions)
        if found:
            consumer.incremental_assign(
                [TopicPartition(t, p, 0) for t, parts in found.items() for p in parts]
            )
        return found, answered

    def _records(
        self, messages: list[Message], at_end: dict[tuple[str, int], bool]
    ) -> list[Record]:
        records = []
        for message in messages:
            error = message.error()
            where = (message.topic() or "", message.partition() or 0)
            if error is None:
                at_end[where] = False
                records.append(Record(where[0], message.key(), message.value()))
            elif error.code() == KafkaError._PARTITION_EOF:
                at_end[where] = True
            else:
                self._warn("reading %s: %s", where[0], error.str())
        return records

    def _hand_over(self, records: list[Record]) -> None:
        try:
            self._on_records(records)
        except Exception:
            logger.exception("records of %s not applied", ", ".join(self._topics))


def _next_batch(consumer: Consumer) -> list[Message]:
    """The next record (waiting up to :data:`POLL_TIMEOUT_S`) and whatever else is already
    fetched. ``consume(n, timeout)`` alone would wait out its timeout for n records, adding
    the timeout to every change's latency."""
    first = consumer.poll(POLL_TIMEOUT_S)
    if first is None:
        return []
    return [first, *consumer.consume(BATCH_MAX - 1, 0)]
