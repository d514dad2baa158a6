"""The batch processor the Faust agent calls: stores what :func:`~streams.ingest.route.route`
decides (dead letters to Kafka, rows to ClickHouse) and retries what can succeed later.

It never raises but to stop the worker, because an exception escaping a Faust agent gets
the batch acknowledged and lost. Its sinks are interfaces: unit tests drive it in memory.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from streams.errors import CoalmineError
from streams.failures import Failure, classify, one_line
from streams.ingest.pricing import PriceTable
from streams.ingest.route import (
    DeadLetter,
    Header,
    Owner,
    RawMessage,
    Rejection,
    RoutedBatch,
    SpanRow,
    SpanWrite,
    TimeBounds,
    dead_letter,
    owned_rows,
    route,
    span_rejection,
)
from streams.logs import RateLimitedLog
from streams.runtime.health import HealthState

log = logging.getLogger(__name__)


class TopicWriter(Protocol):
    """Writes records to one Kafka topic: dead letters here, window rows in
    :mod:`streams.runtime.windows`."""

    async def send(self, key: bytes | None, value: bytes | None, headers: list[Header]) -> None:
        """Return once the broker has durably accepted the record."""


class SpanSink(Protocol):
    async def write(self, rows: Sequence[SpanRow]) -> SpanWrite:
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
        dead_letters: TopicWriter,
        prices: PriceTable,
        stopping: Callable[[], bool],
        *,
        retry: RetryPolicy | None = None,
        max_clock_skew_s: float = 30.0,
        retention_days: int = 0,
        clock: Callable[[], float] = time.time,
        health: HealthState | None = None,
        max_rows_per_write: int = 2000,
    ) -> None:
        """``retention_days``: how long ``coalmine.spans`` keeps a span (0: forever)."""
        self._max_rows_per_write = max_rows_per_write
        self._spans = spans
        self._dead_letters = dead_letters
        self._prices = prices
        self._retry = Retrier(stopping, retry or RetryPolicy(), health)
        self._max_clock_skew = timedelta(seconds=max_clock_skew_s)
        self._retention = timedelta(days=retention_days) if retention_days > 0 else None
        self._clock = clock
        # A producer sending garbage must not flood the worker's log; the DLQ has every one.
        self._warn_rejected = RateLimitedLog(log, logging.WARNING, interval_s=5.0)
        self.counters = IngestCounters()

    async def process(self, messages: Sequence[RawMessage]) -> list[SpanRow] | None:
        """Store a batch; returns the rows whose span this batch's messages own (see
        :func:`owned_rows`), or ``None`` when the worker stopped before it was stored."""
        return await self.store(messages, self.route(messages))

    def route(self, messages: Sequence[RawMessage]) -> RoutedBatch:
        """Decide what becomes of a batch (pure: the caller may do it ahead of storing the
        batch before, while that one's insert runs on its thread)."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        return route(
            messages, self._prices, TimeBounds.at(now, self._max_clock_skew, self._retention)
        )

    async def store(
        self, messages: Sequence[RawMessage], routed: RoutedBatch
    ) -> list[SpanRow] | None:
        """Store what :meth:`route` decided for ``messages``; as :meth:`process`."""
        if not await self._dead_letter(routed.rejected):
            return None
        written = await self._write(routed.rows)
        if written is None:
            return None
        by_position = {(m.partition, m.offset): m for m in messages}
        refused = [
            span_rejection(by_position[(partition, offset)], index, reason)
            for (partition, offset, index), reason in written.refused.items()
        ]
        if not await self._dead_letter(refused):
            return None
        self.counters.batches += 1
        self.counters.spans_written += written.inserted
        self.counters.duplicates_skipped += len(routed.rows) - written.inserted - len(refused)
        self.counters.dead_lettered += len(routed.rejected) + len(refused)
        self.counters.sink_retries = self._retry.retries
        return owned_rows(routed.rows, written.owners)

    async def _write(self, rows: Sequence[SpanRow]) -> SpanWrite | None:
        """Write the rows in inserts of at most ``max_rows_per_write``: a batch of messages
        carrying many spans each becomes several inserts of the size one-span messages make."""
        inserted = 0
        owners: dict[Any, Owner] = {}
        refused: dict[Owner, str] = {}
        step = self._max_rows_per_write
        for start in range(0, max(1, len(rows)), step):
            chunk = rows[start : start + step]
            part = await self._retry(
                "ClickHouse insert", functools.partial(self._spans.write, chunk)
            )
            if part is None:
                return None
            inserted += part.inserted
            owners.update(part.owners)
            refused.update(part.refused)
        return SpanWrite(inserted, owners, refused)

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
