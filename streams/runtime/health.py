"""What ``/health`` reports: ``ok`` or ``degraded``, and why.

The worker feeds a :class:`HealthState` as it goes (the retry loop reports failing and
succeeding attempts, the ingest agent reports stored batches); the page takes a
:class:`HealthSnapshot` of it together with the consumer's positions, and :func:`assess`
decides. Everything here is pure: the clock is passed in.

``degraded`` is answered with HTTP 200, not 503: the worker is alive and doing what it should
(retrying, waiting for the broker), and a restart would not help, so a liveness probe or a load
balancer must not act on it. Monitoring reads the ``status`` field.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

FETCH_SILENCE_S = 10.0
"""A partition with no fetch response for this long means the broker is not answering
(the consumer polls every 1.5 s even when there is nothing to read)."""
STALL_S = 30.0
"""Messages waiting while no batch was stored for this long: ingestion is stuck."""


def first_line(error: BaseException) -> str:
    """The error's type and the first line of its message, for one line of a report."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


@dataclass(frozen=True)
class Retry:
    """A write failing right now: what, since when (clock time of its first failure), how
    often, and the last error."""

    what: str
    since: float
    attempts: int
    last_error: str


@dataclass(frozen=True)
class PartitionPosition:
    """Where one consumed partition stands, all as Kafka offsets of the *next* message.

    ``end``: the high watermark (None until the first fetch); ``committed``: where the group
    restarts after a crash (None while it never committed on it); ``stored``: past the last
    message this worker stored or dead-lettered (None before the first);
    ``fetched_at``: clock time of the last fetch response from the broker.
    """

    partition: int
    end: int | None
    committed: int | None
    stored: int | None
    fetched_at: float | None

    @property
    def lag(self) -> int | None:
        """Messages not yet committed: what a restart would consume again or for the first
        time (the usual "consumer lag")."""
        if self.end is None or self.committed is None:
            return None
        return max(0, self.end - self.committed)

    @property
    def unstored(self) -> int | None:
        """Messages on the broker not stored yet (counted from the committed offset before
        this worker stores anything of the partition)."""
        start = self.committed if self.stored is None else self.stored
        if self.end is None or start is None:
            return None
        return max(0, self.end - start)


class HealthState:
    """Fed by the worker as it runs; read by the health page."""

    def __init__(self, clock: Callable[[], float], started: float | None = None) -> None:
        self._clock = clock
        self.started = clock() if started is None else started
        self.last_stored: float | None = None
        self._retrying: dict[str, Retry] = {}
        self._stored: dict[int, int] = {}

    def failed(self, what: str, error: BaseException) -> None:
        """An attempt at ``what`` failed; it will be retried."""
        previous = self._retrying.get(what)
        since = previous.since if previous else self._clock()
        attempts = previous.attempts + 1 if previous else 1
        self._retrying[what] = Retry(what, since, attempts, first_line(error))

    def succeeded(self, what: str) -> None:
        self._retrying.pop(what, None)

    def observed(
        self, what: str, attempt_once: Callable[[], Awaitable[T]]
    ) -> Callable[[], Awaitable[T]]:
        """``attempt_once``, reporting each failure and success of it here."""

        async def attempt() -> T:
            try:
                result = await attempt_once()
            except Exception as exc:
                self.failed(what, exc)
                raise
            self.succeeded(what)
            return result

        return attempt

    def stored(self, next_offsets: Mapping[int, int]) -> None:
        """A batch is stored; ``next_offsets``: per partition, one past its last message."""
        self.last_stored = self._clock()
        for partition, offset in next_offsets.items():
            self._stored[partition] = max(offset, self._stored.get(partition, 0))

    def forget_partitions(self) -> None:
        """Partitions were revoked; whoever gets them next reports on them."""
        self._stored.clear()

    def stored_offset(self, partition: int) -> int | None:
        """One past the last message of ``partition`` stored here, if any."""
        return self._stored.get(partition)

    def snapshot(self, now: float, partitions: Iterable[PartitionPosition]) -> HealthSnapshot:
        return HealthSnapshot(
            now, self.started, self.last_stored, tuple(self._retrying.values()), tuple(partitions)
        )


def next_offsets(positions: Iterable[tuple[int, int]]) -> dict[int, int]:
    """Per partition, one past the highest offset among ``(partition, offset)`` pairs."""
    result: dict[int, int] = {}
    for partition, offset in positions:
        result[partition] = max(offset + 1, result.get(partition, 0))
    return result


@dataclass(frozen=True)
class HealthSnapshot:
    now: float
    started: float
    last_stored: float | None
    retrying: tuple[Retry, ...] = ()
    partitions: tuple[PartitionPosition, ...] = ()


@dataclass(frozen=True)
class HealthLimits:
    fetch_silence_s: float = FETCH_SILENCE_S
    stall_s: float = STALL_S


@dataclass(frozen=True)
class Assessment:
    status: str
    """``ok`` or ``degraded``."""
    reasons: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)


def assess(snapshot: HealthSnapshot, limits: HealthLimits | None = None) -> Assessment:
    """``degraded`` while a write is being retried, the broker has not answered a fetch for
    ``fetch_silence_s`` (and nothing was stored meanwhile), or messages wait while nothing was
    stored for ``stall_s``.

    Being idle is healthy: nothing stored for an hour with nothing to store is ``ok``.
    """
    limits = limits or HealthLimits()
    now = snapshot.now
    reasons = [
        f"{r.what} failing for {now - r.since:.1f} s ({r.attempts} attempt(s)): {r.last_error}"
        for r in snapshot.retrying
    ]
    since_stored = now - (snapshot.last_stored or snapshot.started)
    # While batches are being stored, a partition fetches nothing new only because records
    # it fetched earlier still wait in the consumer's buffer.
    silent = sorted(
        p.partition
        for p in snapshot.partitions
        if p.fetched_at is not None and now - p.fetched_at >= limits.fetch_silence_s
    )
    if silent and since_stored >= limits.fetch_silence_s:
        oldest = min(p.fetched_at or now for p in snapshot.partitions if p.partition in silent)
        reasons.append(
            f"no fetch response from the broker for {now - oldest:.1f} s "
            f"(partitions {', '.join(map(str, silent))})"
        )
    waiting = sum(p.unstored or 0 for p in snapshot.partitions)
    if waiting and since_stored >= limits.stall_s:
        reasons.append(f"{waiting} message(s) waiting, none stored for {since_stored:.1f} s")
    lags = [p.lag for p in snapshot.partitions if p.lag is not None]
    details = {
        "seconds_since_stored": None
        if snapshot.last_stored is None
        else round(now - snapshot.last_stored, 3),
        "retrying": [
            {
                "what": r.what,
                "seconds": round(now - r.since, 3),
                "attempts": r.attempts,
                "last_error": r.last_error,
            }
            for r in snapshot.retrying
        ],
        "consumer_lag": sum(lags) if lags else None,
        "partitions": [
            {
                "partition": p.partition,
                "end": p.end,
                "committed": p.committed,
                "stored": p.stored,
                "lag": p.lag,
                "seconds_since_fetch": None
                if p.fetched_at is None
                else round(now - p.fetched_at, 3),
            }
            for p in snapshot.partitions
        ],
    }
    return Assessment("degraded" if reasons else "ok", tuple(reasons), details)
