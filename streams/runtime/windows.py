"""The exactness protocol of the windows, between the ingest agent and
:class:`~streams.ingest.aggregate.WindowAggregator`.

Stored spans go into their windows. A message is acknowledged once every window row counting
it is on ``coalmine.version-stats`` and in the store, in that order: a crash in between
re-emits a row with the same identity rather than losing it on the topic. Before a
partition's first spans are counted, the store says which offsets its rows already count
(coverage), so spans delivered again after a crash are not counted twice. A revocation moves
the ``epoch``: batches begun before it are not counted, since their messages are delivered
again from the committed offsets.

No Kafka or ClickHouse client here: the topic, the store and the clock are passed in, so unit
tests drive this with in-memory ones (:mod:`streams.runtime.app` wires the real ones).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from schemas.topics import LATE_HEADER
from streams.ingest.aggregate import (
    WindowAggregator,
    WindowKey,
    WindowRow,
    partitions_of,
    request_costs,
)
from streams.ingest.route import MessagePosition, SpanRow, message_position, position
from streams.runtime.processor import Retrier, TopicWriter

T = TypeVar("T")


class WindowStore(Protocol):
    """Where window rows are kept (``coalmine.version_stats``)."""

    async def write(self, rows: Sequence[WindowRow]) -> None:
        """Store the rows, each whole or not at all; writing the same rows again after a
        failure must not count them twice. Any failure is raised."""

    async def coverage(
        self, topic: str, window_seconds: int, lowest: Mapping[int, int]
    ) -> dict[int, dict[WindowKey, int]]:
        """For each partition of ``lowest``, per window: one past the last offset its stored
        rows count, for the rows reaching past ``lowest[partition]``."""


@dataclass
class WindowCounters:
    rows_emitted: int = 0
    late_rows_emitted: int = 0
    open_windows: int = 0


class StreamWindows(Generic[T]):
    """Counts stored spans in their windows and emits the windows that closed.

    ``T`` is what acknowledges a message (a Faust event); a message is acknowledged only once
    the rows counting it are stored. ``clock`` gives epoch seconds.
    """

    def __init__(
        self,
        aggregator: WindowAggregator[T],
        records: TopicWriter,
        store: WindowStore,
        retry: Retrier,
        clock: Callable[[], float],
    ) -> None:
        self._aggregator = aggregator
        self._records = records
        self._store = store
        self._retry = retry
        self._clock = clock
        self._lock = asyncio.Lock()
        self.epoch = 0
        self.counters = WindowCounters()

    async def add(
        self, rows: Sequence[SpanRow], tokens: Mapping[MessagePosition, T], epoch: int
    ) -> list[T] | None:
        """Count the owned ``rows`` of a stored batch whose messages are ``tokens`` (by
        partition and offset), read at ``epoch``; returns the tokens to acknowledge now (the
        others wait for their windows), or ``None`` when the batch must not be counted.

        The rows are counted without a pause (no ``await``), so no window is emitted between
        two spans of one message: a row counting a message counts all of its spans in that
        window, and coverage by offset stays exact for messages of many spans. The rows hold
        whole messages (those of their spans that are stored), so each request's cost total
        is assembled here (:func:`~streams.ingest.aggregate.request_costs`)."""
        aggregator = self._aggregator
        unloaded = {
            p: o for p, o in partitions_of(tokens).items() if not aggregator.has_coverage(p)
        }
        if unloaded:
            covered = await self._retry(
                "reading window coverage",
                lambda: self._store.coverage(aggregator.topic, aggregator.window_seconds, unloaded),
            )
            if covered is None:
                return None
            if epoch == self.epoch:
                for partition, stored_until in covered.items():
                    aggregator.load_coverage(partition, stored_until)
        if epoch != self.epoch:
            return None
        now = self._clock()
        held: set[MessagePosition] = set()
        costs = request_costs(rows)
        for row in rows:
            message = message_position(row)
            cost = costs.get(position(row)) if row.kind == "request" else None
            if aggregator.add(message[0], message[1], row, tokens[message], now, request_cost=cost):
                held.add(message)
        self.counters.open_windows = aggregator.open_windows
        return [token for position, token in tokens.items() if position not in held]

    async def flush_due(self, ack: Callable[[T], Awaitable[bool]]) -> bool:
        """Emit the windows that closed, then ``ack`` their messages; returns ``False`` when
        stopping interrupted it (nothing is then acknowledged)."""
        async with self._lock:
            flush = self._aggregator.due(self._clock())
            self.counters.open_windows = self._aggregator.open_windows
            if not flush.rows:
                return True
            if await self._retry("emitting window rows", lambda: self._emit(flush.rows)) is None:
                return False
            for token in flush.tokens:
                await ack(token)
            self.counters.rows_emitted += len(flush.rows)
            self.counters.late_rows_emitted += sum(row.late for row in flush.rows)
            return True

    async def forget(self) -> None:
        """Partitions were revoked: drop every open window once an emission in progress ends."""
        async with self._lock:
            self.epoch += 1
            self._aggregator.forget()
            self.counters.open_windows = 0

    async def _emit(self, rows: Sequence[WindowRow]) -> bool:
        await asyncio.gather(
            *(
                self._records.send(
                    row.stats.agent.encode(),
                    row.stats.model_dump_json().encode(),
                    [(LATE_HEADER, b"1" if row.late else b"0")],
                )
                for row in rows
            )
        )
        await self._store.write(rows)
        return True
