"""Where the SDK's spans go: the :class:`Publisher` interface and :class:`KafkaPublisher`.

A publisher never raises from ``publish`` and never blocks in it: broker trouble is counted
and logged (rate-limited), a full send queue drops the event and counts it. Every event
handed to :class:`KafkaPublisher` ends up delivered, failed or dropped, and
:class:`PublisherStats` says how many of each. Agent code normally imports these names from
:mod:`streams.sdk`.
"""

from __future__ import annotations

import atexit
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaError, Message, Producer

from schemas.framing import join_spans
from schemas.topics import TRACES
from schemas.trace import MAX_EVENT_BYTES, SCHEMA_VERSION, TraceEvent
from streams.logs import SDK_LIBRDKAFKA_LOG, RateLimitedLog, librdkafka_log
from streams.sdk.batching import Batch, BatchLimits, Span, SpanBatcher
from streams.sdk.closing import ClosedOnExit
from streams.sdk.kafka_security import security_config
from streams.sdk.settings import QUEUE_MAX_KBYTES, QUEUE_MAX_MESSAGES, SdkSettings

logger = logging.getLogger("coalmine.sdk")

DeliveryListener = Callable[[str, str | None], None]
"""Called with ``(event_id, error)`` once per published event; ``error`` is None on success."""


class Publisher(Protocol):
    """Where finished spans go. Implementations must never raise from :meth:`publish` and
    never block in it; tests use an in-memory list, production uses :class:`KafkaPublisher`."""

    def publish(self, event: TraceEvent) -> None:
        """Queue ``event`` for delivery and return at once."""

    def flush(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for queued events; return how many are still queued."""

    def close(self, timeout: float) -> None:
        """Flush for up to ``timeout`` seconds and release resources; later publishes are
        dropped (and counted)."""


@dataclass(frozen=True)
class PublisherStats:
    """Counters since the publisher was created.

    ``published`` counts events accepted (held for a batch or queued); each ends up ``delivered``
    (acknowledged by all in-sync replicas) or ``failed``. After :meth:`KafkaPublisher.close`,
    ``published == delivered + failed``. ``dropped`` events never entered the queue (queue
    full, oversized, publisher closed) and are not part of ``published``.
    """

    published: int = 0
    delivered: int = 0
    failed: int = 0
    dropped: int = 0

    @property
    def pending(self) -> int:
        return self.published - self.delivered - self.failed


class CountingPublisher(Publisher, Protocol):
    """A publisher that reports how its events fared (what ``coalmine generate`` shows)."""

    @property
    def stats(self) -> PublisherStats: ...


POLL_INTERVAL_S = 0.2

_HEADERS: list[tuple[str, str | bytes | None]] = [
    ("content-type", b"application/json"),
    ("schema_version", str(SCHEMA_VERSION).encode()),
]


class KafkaPublisher(ClosedOnExit):
    """Publishes spans to a Kafka topic through confluent-kafka's idempotent producer.

    Spans travel in batches (:mod:`streams.sdk.batching`): a request's spans together once
    the request ends, and across requests up to the ``batch`` limits (50 spans, 256 KiB, 5 ms
    of linger by default); a batch of one span is that span's JSON object, as before batches.
    Key = the ``trace_id`` of the batch's first span, so a request's spans stay together and
    in order. Memory is bounded by ``max_queue_messages`` spans and ``max_queue_kbytes`` not
    yet delivered (held for a batch or queued); beyond them new events are dropped and
    counted rather than blocking the agent. A daemon thread sends batches whose time has come
    and serves delivery reports even while the agent is idle, and the publisher flushes
    itself (held spans too) at interpreter exit.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        max_queue_messages: int = QUEUE_MAX_MESSAGES,
        max_queue_kbytes: int = QUEUE_MAX_KBYTES,
        on_delivery: DeliveryListener | None = None,
        extra_config: Mapping[str, Any] | None = None,
        close_timeout: float = 10.0,
        batch: BatchLimits | None = None,
    ) -> None:
        """``batch``: how spans are gathered into messages (``BatchLimits(max_spans=1)``:
        one message per span, each sent at once)."""
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "client.id": "coalmine-sdk",
            # Idempotence implies acks=all and bounded in-flight requests: retries after a
            # lost ack never duplicate or reorder a trace's spans.
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "compression.type": "lz4",
            "queue.buffering.max.messages": max_queue_messages,
            "queue.buffering.max.kbytes": max_queue_kbytes,
            "error_cb": self._on_client_error,
            "logger": librdkafka_log(SDK_LIBRDKAFKA_LOG),
        }
        config.update(extra_config or {})
        self._producer = Producer(config)
        self._topic = topic
        self._on_delivery = on_delivery
        self._close_timeout = close_timeout
        self._lock = threading.RLock()
        self._published = self._delivered = self._failed = self._dropped = 0
        self._max_pending = max_queue_messages
        self._max_pending_bytes = max_queue_kbytes * 1024
        self._pending_bytes = 0
        self._batcher = SpanBatcher(batch or BatchLimits())
        self._wake = threading.Event()
        self._closed = False
        self._warn_dropped = RateLimitedLog(logger, logging.WARNING)
        self._warn_failed = RateLimitedLog(logger, logging.WARNING)
        self._warn_client = RateLimitedLog(logger, logging.WARNING)
        self._stop_polling = threading.Event()
        self._poller = threading.Thread(
            target=self._poll_loop, name="coalmine-publisher-poll", daemon=True
        )
        self._poller.start()
        atexit.register(self._close_at_exit)

    @classmethod
    def from_settings(cls, settings: SdkSettings, **kwargs: Any) -> KafkaPublisher:
        """A publisher to ``<prefix>.traces`` on ``COALMINE_KAFKA_BOOTSTRAP``, with the
        ``COALMINE_KAFKA_*`` security settings and the ``COALMINE_SDK_QUEUE_*`` bounds;
        ``kwargs`` go to the constructor, and an ``extra_config`` of theirs is laid over the
        security settings."""
        extra = {**security_config(settings), **(kwargs.pop("extra_config", None) or {})}
        kwargs.setdefault("max_queue_messages", settings.sdk_queue_max_messages)
        kwargs.setdefault("max_queue_kbytes", settings.sdk_queue_max_kbytes)
        return cls(settings.kafka_bootstrap, settings.topic(TRACES), extra_config=extra, **kwargs)

    @property
    def topic(self) -> str:
        return self._topic

    @property
    def stats(self) -> PublisherStats:
        with self._lock:
            return PublisherStats(self._published, self._delivered, self._failed, self._dropped)

    def publish(self, event: TraceEvent) -> None:
        """Queue ``event``; never raises, never blocks."""
        try:
            value = event.model_dump_json().encode()
        except Exception as exc:  # cannot happen for a validated event; never raise anyway
            self._drop(f"cannot encode event: {type(exc).__name__}: {exc}")
            return
        # Ingest rejects bigger spans; sending one would only move the loss downstream.
        if len(value) > MAX_EVENT_BYTES:
            self._drop(f"event is {len(value)} bytes (limit {MAX_EVENT_BYTES})")
            return
        span = Span(event.trace_id, str(event.event_id), value)
        problem = self._accept(span, ends_trace=event.parent_span_id is None)
        if problem is not None:
            self._drop(problem)
            return
        self._poll(0)

    def _accept(self, span: Span, *, ends_trace: bool) -> str | None:
        """Take the span into a batch and send the batches it fills; return why not, if it
        was not taken."""
        # Under the lock so that close() cannot slip between the check and the batching and
        # leave a span that is neither delivered nor failed. produce() runs no callbacks.
        with self._lock:
            if self._closed:
                return "publisher is closed"
            pending = self._published - self._delivered - self._failed
            if (
                pending >= self._max_pending
                or self._pending_bytes + len(span.value) > self._max_pending_bytes
            ):
                return "the send queue is full (is the broker reachable?)"
            self._published += 1
            self._pending_bytes += len(span.value)
            self._send(self._batcher.add(span, ends_trace, time.monotonic()))
            if self._batcher.next_deadline() is not None:
                self._wake.set()
            return None

    def _send(self, batches: list[Batch]) -> None:
        """Hand batches to librdkafka (under the lock); a batch it does not take fails."""
        for batch in batches:
            event_ids = tuple(span.event_id for span in batch.spans)
            size = sum(len(span.value) for span in batch.spans)
            try:
                self._producer.produce(
                    self._topic,
                    value=join_spans([span.value for span in batch.spans]),
                    key=batch.key.encode(),
                    headers=_HEADERS,
                    on_delivery=functools.partial(self._delivery_report, event_ids, size),
                )
            except BufferError:
                self._fail(event_ids, size, "the send queue is full (is the broker reachable?)")
            except Exception as exc:  # KafkaException (fatal producer state), anything else
                self._fail(event_ids, size, f"{type(exc).__name__}: {exc}")

    def flush(self, timeout: float) -> int:
        """Send every held span now and wait up to ``timeout`` seconds for outstanding
        deliveries; return how many messages remain."""
        with self._lock:
            self._send(self._batcher.drain(time.monotonic()))
        try:
            return int(self._producer.flush(timeout))
        except Exception as exc:  # a user's on_delivery raising is caught below; be safe anyway
            logger.error("flush failed: %s", exc)
            return len(self._producer)

    def close(self, timeout: float | None = None) -> None:
        """Flush for up to ``timeout`` seconds (default ``close_timeout``), then give up on
        the rest, counting them as failed. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self._close_at_exit)
        self._stop_polling.set()
        self._wake.set()
        self._poller.join()
        remaining = self.flush(self._close_timeout if timeout is None else timeout)
        if remaining:
            logger.error(
                "closing with %d event(s) undelivered to %s; they are counted as failed",
                remaining,
                self._topic,
            )
            # Purging makes librdkafka report every remaining message as failed, so the
            # counters still add up: published == delivered + failed.
            self._producer.purge()
            self.flush(1.0)
        self._producer.close()

    # -- callbacks (run on whichever thread calls poll/flush) --

    def _delivery_report(
        self, event_ids: tuple[str, ...], size: int, err: KafkaError | None, msg: Message
    ) -> None:
        if err is None:
            with self._lock:
                self._delivered += len(event_ids)
                self._pending_bytes -= size
            self._report(event_ids, None)
        else:
            self._fail(event_ids, size, err.str())

    def _fail(self, event_ids: tuple[str, ...], size: int, error: str) -> None:
        # The lock is re-entrant: _send() fails batches while holding it.
        with self._lock:
            self._failed += len(event_ids)
            self._pending_bytes -= size
        self._warn_failed("delivery to %s failed: %s", self._topic, error)
        self._report(event_ids, error)

    def _report(self, event_ids: tuple[str, ...], error: str | None) -> None:
        if self._on_delivery is None:
            return
        for event_id in event_ids:
            try:
                self._on_delivery(event_id, error)
            except Exception:
                # The listener is user code; an exception here would escape from poll() in
                # the agent's thread.
                logger.exception("on_delivery listener raised; ignored")

    def _on_client_error(self, err: KafkaError) -> None:
        self._warn_client("Kafka client error: %s", err.str())

    def _drop(self, reason: str) -> None:
        with self._lock:
            self._dropped += 1
        self._warn_dropped("event dropped: %s", reason)

    def _poll(self, timeout: float) -> None:
        try:
            self._producer.poll(timeout)
        except Exception as exc:
            logger.error("serving delivery reports failed: %s", exc)

    def _poll_loop(self) -> None:
        """Sends the batches whose time has come, and serves delivery reports."""
        while not self._stop_polling.is_set():
            self._poll(0)
            with self._lock:
                now = time.monotonic()
                self._send(self._batcher.due(now))
                deadline = self._batcher.next_deadline()
                self._wake.clear()
            wait = POLL_INTERVAL_S if deadline is None else deadline - now
            self._wake.wait(min(POLL_INTERVAL_S, max(0.0, wait)))

    def _close_at_exit(self) -> None:
        self.close()
