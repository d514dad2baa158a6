"""The detector's Faust wiring: a thin adapter around :class:`~streams.detector.watch.CanaryWatch`.

* An agent reads ``coalmine.version-stats`` (key = agent: each agent's partials reach one
  worker of the group) and hands each batch to the watch; a batch is acknowledged once what
  the watch said about it is published.
* A :class:`~streams.sdk.follow.TopicFollower` (the SDK routers' reader) follows
  ``coalmine.deployments`` in every worker, and ``coalmine.alerts`` and
  ``coalmine.rollbacks`` for the ids already published; the version-stats agent waits until
  it has read them to their end once.
* A task ticks the watch every :data:`TICK_S` (windows complete and horizons pass without new
  messages) and applies the records the follower read.
* Every batch also goes to a :class:`~streams.detector.driftwatch.DriftWatch` (each version
  against its own history: ``drift`` and ``cost_spike`` alerts).
* A judge (re)built is replayed from ClickHouse ``version_stats`` on the worker's ClickHouse
  thread.

Everything is published through the app's producer (acks=all), awaited, retried while the
failure is transient: alerts first, then rollback commands (which name them), then
judgements.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import faust
from clickhouse_connect.driver.client import Client
from pydantic import ValidationError

from schemas.alert import Alert
from schemas.deployment import DeploymentState
from schemas.judgement import Judgement
from schemas.rollback import RollbackCommand
from schemas.topics import ALERTS, DEPLOYMENTS, JUDGEMENTS, LATE_HEADER, ROLLBACKS
from schemas.window_stats import WindowStats
from streams.detector.drift import DriftConfig
from streams.detector.driftwatch import DriftWatch
from streams.detector.watch import CanaryWatch, Generation, Outputs, Partial, WatchSettings
from streams.ingest.route import RawMessage
from streams.runtime.processor import Retrier, TopicWriter
from streams.sdk.compacted import Record
from streams.sdk.follow import TopicFollower
from streams.settings import Settings
from streams.storage import clickhouse

log = logging.getLogger(__name__)

TICK_S = 0.5

M = TypeVar("M", DeploymentState, Alert, RollbackCommand)
StoredPartials = Callable[[Generation], Awaitable[list[tuple[WindowStats, bool]]]]


@dataclass
class DetectorCounters:
    judgements_published: int = 0
    alerts_published: int = 0
    rollbacks_published: int = 0
    partials_read: int = 0
    partials_invalid: int = 0
    judges_replayed: int = 0
    drift_stale_partials: int = 0


class Detector:
    """The watch, what feeds it and where its events go. No Faust here: the app passes the
    topic writers, the store and the retrier (:func:`streams.runtime.app.install_detector`)."""

    def __init__(
        self,
        settings: Settings,
        writers: Mapping[str, TopicWriter],
        stored: StoredPartials,
        retry: Retrier,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._clock = clock
        watch = WatchSettings(
            window_seconds=settings.window_seconds,
            allowed_lateness_s=settings.allowed_lateness_s,
            emission_margin_s=settings.detector_margin_s,
        )
        self.watch = CanaryWatch(watch)
        self.drift = DriftWatch(DriftConfig(grace_s=watch.grace_s))
        self._topics = {
            "deployments": settings.topic(DEPLOYMENTS),
            "alerts": settings.topic(ALERTS),
            "rollbacks": settings.topic(ROLLBACKS),
        }
        self._writers = writers
        self._stored = stored
        self._retry = retry
        self._lock = asyncio.Lock()
        self.caught_up = asyncio.Event()
        self.counters = DetectorCounters()

    @property
    def followed_topics(self) -> list[str]:
        return list(self._topics.values())

    async def on_partials(self, messages: Sequence[RawMessage]) -> bool:
        """A batch of ``coalmine.version-stats``; False when stopping interrupted it."""
        await self.caught_up.wait()
        partials = []
        for message in messages:
            try:
                stats = WindowStats.model_validate_json(message.value or b"")
            except ValidationError as exc:
                self.counters.partials_invalid += 1
                log.warning("a version-stats record skipped: %s", exc.errors()[0]["msg"])
                continue
            partials.append(Partial(stats, dict(message.headers).get(LATE_HEADER) == b"1"))
        self.counters.partials_read += len(partials)
        async with self._lock:
            now = self._clock()
            out = self.watch.partials(partials, now)
            out.alerts += self.drift.partials(partials, now)
            self.counters.drift_stale_partials = self.drift.stale
            if not await self._publish(out):
                return False
            for generation in out.replays:
                if not await self._replay(generation):
                    return False
        return True

    async def on_records(self, records: Sequence[Record]) -> bool:
        """Records the follower read: deployment states and the ids already published."""
        async with self._lock:
            for record in records:
                if record.value is None:
                    continue
                if record.topic == self._topics["deployments"]:
                    state = _parsed(DeploymentState, record)
                    built = None if state is None else self.watch.deployment(state)
                    if built is not None and not await self._replay(built):
                        return False
                elif record.topic == self._topics["alerts"]:
                    alert = _parsed(Alert, record)
                    self.watch.published([] if alert is None else [alert.id])
                else:
                    command = _parsed(RollbackCommand, record)
                    self.watch.published([] if command is None else [command.id])
        return True

    async def tick(self) -> bool:
        async with self._lock:
            now = self._clock()
            out = self.watch.tick(now)
            out.alerts += self.drift.tick(now)
            return await self._publish(out)

    def disown(self) -> None:
        self.watch.disown()
        self.drift.disown()

    async def _replay(self, generation: Generation) -> bool:
        stored = await self._retry("reading a canary's windows", lambda: self._stored(generation))
        if stored is None:
            return False
        self.counters.judges_replayed += 1
        partials = [Partial(stats, late) for stats, late in stored]
        log.info(
            "judging %s %s vs %s (generation %d) from %d stored partials",
            generation.agent,
            generation.judged.canary_version,
            generation.judged.stable_version,
            generation.judged.generation,
            len(partials),
        )
        return await self._publish(self.watch.replay(generation, partials, self._clock()))

    async def _publish(self, out: Outputs) -> bool:
        ordered: tuple[tuple[str, Sequence[Alert | RollbackCommand | Judgement]], ...] = (
            (ALERTS.name, out.alerts),
            (ROLLBACKS.name, out.rollbacks),
            (JUDGEMENTS.name, out.judgements),
        )
        for name, events in ordered:
            writer = self._writers[name]
            for event in events:
                if await self._retry(f"publishing to {name}", _sending(writer, event)) is None:
                    return False
            if name == ALERTS.name:
                self.counters.alerts_published += len(events)
                for alert in out.alerts:
                    log.warning("alert: %s", alert.message)
            elif name == ROLLBACKS.name:
                self.counters.rollbacks_published += len(events)
                for command in out.rollbacks:
                    log.warning("rollback command %s: %s", command.id, command.reason)
            else:
                self.counters.judgements_published += len(events)
        return True


def _sending(
    writer: TopicWriter, event: Alert | RollbackCommand | Judgement
) -> Callable[[], Awaitable[bool]]:
    async def send() -> bool:
        await writer.send(event.agent.encode(), event.model_dump_json().encode(), [])
        return True

    return send


def _parsed(model: type[M], record: Record) -> M | None:
    try:
        return model.model_validate_json(record.value or b"")
    except ValidationError as exc:
        log.warning("a %s record skipped: %s", record.topic, exc.errors()[0]["msg"])
        return None


Stored = list[tuple[WindowStats, bool]]


def stored_partials(
    run: Callable[[Callable[[Client], Stored]], Awaitable[Stored]], window_seconds: int
) -> StoredPartials:
    """The generation's stored partials, read through ``run`` (the ClickHouse thread)."""

    async def read(generation: Generation) -> Stored:
        judged = generation.judged
        versions = (judged.stable_version, judged.canary_version)
        return await run(
            lambda client: clickhouse.stored_partials(
                client, judged.agent, versions, window_seconds, generation.since
            )
        )

    return read


def follow_and_tick(
    app: faust.App, settings: Settings, detector: Detector
) -> Callable[[], Awaitable[None]]:
    """The app's task following deployments, alerts and rollbacks and ticking the detector."""

    async def follow_and_tick() -> None:
        loop = asyncio.get_running_loop()
        records: asyncio.Queue[list[Record]] = asyncio.Queue()

        def hand_over(batch: list[Record]) -> None:  # from the follower's thread
            loop.call_soon_threadsafe(records.put_nowait, batch)

        follower = TopicFollower(
            settings,
            detector.followed_topics,
            hand_over,
            name="coalmine-detector",
            on_caught_up=lambda: hand_over([]),
        )
        follower.start()
        try:
            while not app.should_stop:
                try:
                    batch = await asyncio.wait_for(records.get(), TICK_S)
                except TimeoutError:
                    batch = None
                if batch == [] and follower.caught_up.is_set():
                    detector.caught_up.set()
                ok = await detector.on_records(batch) if batch else True
                if not ok or not await detector.tick():
                    return
        except Exception as exc:
            log.critical("the detector failed; stopping the worker: %s", exc, exc_info=True)
            await app.crash(exc)
        finally:
            await asyncio.to_thread(follower.close)

    return follow_and_tick
