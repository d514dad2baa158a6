"""Following compacted topics from their beginning in a background thread: the
:class:`TopicFollower`, the Router's reader.

A follower wants every record from the start, then each new one as it comes, and to know when
it has seen everything that was there when it started ("caught up"); the reading itself is
:class:`~streams.sdk.compacted.PartitionReader`'s (no consumer group, nothing committed: each
process keeps its own position in memory). What the follower adds: the thread, topics that do
not exist yet (looked up again every few seconds), and broker trouble, which is logged
(rate-limited) and waited out: the consumer reconnects by itself and resumes where it was,
while whatever the follower fed its owner stays as it was.
This module needs only the standard library and confluent-kafka: the SDK uses it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaException

from streams.logs import SDK_LIBRDKAFKA_LOG, RateLimitedLog, librdkafka_log
from streams.sdk.compacted import PartitionReader, Record
from streams.sdk.kafka_security import client_config
from streams.sdk.settings import SdkSettings

logger = logging.getLogger("coalmine.sdk.follow")

POLL_TIMEOUT_S = 0.1
"""How long one read waits for a record; also how soon :meth:`TopicFollower.close` is seen."""
METADATA_TIMEOUT_S = 5.0
REDISCOVER_S = 5.0
"""How often topics that did not exist yet are looked up again."""
RETRY_S = 0.2
"""How soon a topic is looked up again when the broker did not answer for it: a topic just
created has no leader for a moment, and its records must not wait :data:`REDISCOVER_S`.
(A broker that is down makes each lookup wait :data:`METADATA_TIMEOUT_S` anyway.)"""

RecordsHandler = Callable[[list[Record]], None]


class TopicFollower:
    """Follows ``topics`` from their beginning in a daemon thread, handing records to
    ``on_records`` in order (per partition), a batch at a time, from that thread.

    :attr:`caught_up` is set after the batch that reached the end of every partition of every
    topic that existed has been handed over (a topic that does not exist yet counts as empty,
    and is looked up again every few seconds). ``on_records`` must not raise; if it does, the
    error is logged and the follower goes on. :meth:`close` stops the thread and the consumer.

    ``from_end``: the topics found at the first lookup are read from their ends then (only
    what is written after the follower started; :attr:`caught_up` is set once they are
    assigned), a topic that appears later from its beginning. ``on_tick`` is called from the
    thread after every read (at least every :data:`POLL_TIMEOUT_S` while the broker answers);
    like ``on_records`` it must be quick and must not raise.
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
        from_end: bool = False,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        self._topics = tuple(topics)
        self._from_end = from_end
        self._on_tick = on_tick
        self._on_records = on_records
        self._on_caught_up = on_caught_up
        self._name = name
        self._config: dict[str, Any] = {
            **client_config(settings),
            "client.id": name,
            "logger": librdkafka_log(SDK_LIBRDKAFKA_LOG),
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
        reader = PartitionReader(self._config, name=self._name, on_error=self._warn)
        try:
            self._follow(reader)
        finally:
            reader.close()

    def _follow(self, reader: PartitionReader) -> None:
        unassigned = set(self._topics)
        unanswered = set(self._topics)  # lookups that failed so far (broker down)
        next_lookup = 0.0
        while not self._stop.is_set():
            if unassigned and time.monotonic() >= next_lookup:
                next_lookup = time.monotonic() + REDISCOVER_S
                found = self._look_up(reader, unassigned, unanswered)
                if found:
                    try:
                        reader.assign(found, METADATA_TIMEOUT_S, from_end=self._from_end)
                        unassigned -= found.keys()
                    except KafkaException as exc:
                        self._warn("cannot read the ends of %s yet: %s", found, exc.args[0])
                if unanswered or unassigned & found.keys():
                    next_lookup = time.monotonic() + RETRY_S
                if not unanswered:
                    self._from_end = False  # a topic found from now on is new: read it whole
            if reader.assigned:
                records = reader.read(POLL_TIMEOUT_S)
                if records:
                    self._hand_over(records)
            else:
                self._stop.wait(POLL_TIMEOUT_S)
            if self._on_tick is not None:
                self._hand_over_tick()
            # A topic that does not exist yet counts as empty, one not looked up yet does not.
            if not unanswered and reader.at_ends and not self.caught_up.is_set():
                self.caught_up.set()
                if self._on_caught_up is not None:
                    self._on_caught_up()

    def _look_up(
        self, reader: PartitionReader, topics: set[str], unanswered: set[str]
    ) -> dict[str, list[int]]:
        """The partitions of those ``topics`` that exist; each topic whose lookup was
        answered (found or known missing) leaves ``unanswered``."""
        found = {}
        for topic in sorted(topics):
            try:
                partitions = reader.partitions(topic, METADATA_TIMEOUT_S)
            except KafkaException as exc:
                self._warn("cannot read the metadata of %s yet: %s", topic, exc.args[0])
                continue
            unanswered.discard(topic)
            if partitions:
                found[topic] = partitions
        return found

    def _hand_over_tick(self) -> None:
        assert self._on_tick is not None
        try:
            self._on_tick()
        except Exception:
            logger.exception("the tick of %s failed", ", ".join(self._topics))

    def _hand_over(self, records: list[Record]) -> None:
        try:
            self._on_records(records)
        except Exception:
            logger.exception("records of %s not applied", ", ".join(self._topics))
