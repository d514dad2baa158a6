"""The Faust application: topics, the ingest agent and web pages. Wiring only.

Business logic lives in :mod:`streams.ingest`, :mod:`streams.runtime.processor`,
:mod:`streams.runtime.windows` and :mod:`streams.storage.clickhouse`; the agents here hand
batches to it and acknowledge them once they are stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, TypeVar, cast

import faust
from clickhouse_connect.driver.client import Client
from faust.exceptions import ConsumerNotStarted
from faust.sensors import Monitor
from faust.streams import Stream
from faust.types import TP, EventT
from faust.web import Request, Response, View
from mode.types.signals import BaseSignalT

from schemas.alert import Alert
from schemas.deployment import DeploymentState
from schemas.topics import (
    ALERTS,
    APPROVAL_DECISIONS,
    APPROVAL_REQUESTS,
    DEPLOYMENTS,
    JUDGEMENTS,
    ROLLBACKS,
    TRACES,
    TRACES_DLQ,
    VERSION_STATS,
    VERSIONS,
    Topic,
)
from schemas.version import AgentVersion
from streams.ingest.aggregate import WindowAggregator, WindowKey, WindowRow
from streams.ingest.pricing import PriceTable
from streams.ingest.route import Header, RawMessage, RoutedBatch, SpanRow, SpanWrite
from streams.runtime import alert_webhook, detect, faust_auth, sqlpage, statuspage
from streams.runtime.control import ControlRecorder
from streams.runtime.health import HealthState, PartitionPosition, assess, next_offsets
from streams.runtime.processor import (
    IngestProcessor,
    PipelineBugError,
    ProgressLog,
    Retrier,
    RetryPolicy,
    SpanSink,
)
from streams.runtime.windows import StreamWindows
from streams.settings import Settings
from streams.storage import clickhouse
from streams.storage.control import (
    AgentVersionWriter,
    Appended,
    ApprovalWriter,
    ControlWrite,
    DeploymentEventWriter,
    Positioned,
)
from streams.storage.detector_events import (
    ALERTS_TABLE,
    JUDGEMENTS_TABLE,
    ROLLBACKS_TABLE,
    DetectorEventWriter,
    E,
    EventTable,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
PROGRESS_INTERVAL_S = 10.0
WINDOW_TICK_S = 0.25


class ClickHouseThread:
    """Runs blocking ClickHouse calls on one dedicated thread.

    The client is synchronous (chDB even runs inside this process), so calls leave the event
    loop free for Kafka heartbeats, and one thread means one call at a time on the client.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")

    async def run(self, call: Callable[[Client], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._call, call)

    def _call(self, call: Callable[[Client], T]) -> T:
        try:
            return call(self._client)
        except Exception:
            clickhouse.drain_after_failure(self._client)  # before the retry reads an answer
            raise

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()


class AsyncSpanWriter:
    """The span writer, called on the ClickHouse thread."""

    def __init__(self, thread: ClickHouseThread) -> None:
        self._thread = thread

    async def write(self, rows: Sequence[SpanRow]) -> SpanWrite:
        return await self._thread.run(lambda client: clickhouse.SpanWriter(client).write(rows))


class AsyncVersionStats:
    """The window store (:class:`streams.runtime.windows.WindowStore`): version stats written
    and read on the ClickHouse thread."""

    def __init__(self, thread: ClickHouseThread) -> None:
        self._thread = thread

    async def write(self, rows: Sequence[WindowRow]) -> None:
        await self._thread.run(lambda c: clickhouse.VersionStatsWriter(c).write(rows))

    async def coverage(
        self, topic: str, window_seconds: int, lowest: Mapping[int, int]
    ) -> dict[int, dict[WindowKey, int]]:
        return await self._thread.run(
            lambda c: clickhouse.VersionStatsWriter(c).coverage(topic, window_seconds, lowest)
        )


class FaustTopicWriter:
    """Records to one topic through the app's producer, each awaited until the broker has
    acknowledged it (``producer_acks=-1``: every in-sync replica)."""

    def __init__(self, app: faust.App, topic: str) -> None:
        self._app = app
        self._topic = topic

    async def send(self, key: bytes | None, value: bytes | None, headers: list[Header]) -> None:
        await self._app.producer.send_and_wait(
            self._topic, key, value, partition=None, timestamp=None, headers=headers
        )


class PerBatchMonitor(Monitor):
    """Faust's monitor without its per-message bookkeeping (counters, timestamps and a
    latency sample for every message and event, ~µs each): nothing here reads those figures
    (``/health`` has its own). Commits, sends and rebalances are still recorded. Passed to
    the app as its ``monitor``, Faust's extension point for sensors."""

    def on_message_in(self, tp: TP, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: TP, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(
        self, tp: TP, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: TP, offset: int, message: Any) -> None:
        return None


def _event_batches(
    stream: faust.StreamT[bytes], max_events: int, within_s: float
) -> AsyncIterator[Sequence[EventT[bytes]]]:
    """Batches of unacknowledged events. Faust types ``noack_take`` as yielding values and only
    declares it on the concrete ``Stream``; at run time it yields the events themselves."""
    batches = cast(Stream[bytes], stream).noack_take(max_events, within=within_s)
    return cast(AsyncIterator[Sequence[EventT[bytes]]], batches)


def _by_position(events: Sequence[EventT[bytes]]) -> dict[tuple[int, int], EventT[bytes]]:
    return {(e.message.partition, e.message.offset): e for e in events}


def _raw_message(event: EventT[bytes]) -> RawMessage:
    message = event.message
    headers = message.headers or ()
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return RawMessage(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        headers=tuple((key, value or b"") for key, value in pairs),
        timestamp_ms=round(message.timestamp * 1000) if message.timestamp else None,
    )


async def store_in_order(
    batches: AsyncIterator[Sequence[EventT[bytes]]],
    route: Callable[[Sequence[RawMessage]], RoutedBatch],
    store: Callable[[Sequence[EventT[bytes]], Sequence[RawMessage], RoutedBatch], Awaitable[bool]],
    stop_worker: Callable[[str, Exception], Awaitable[None]],
) -> None:
    """Route each batch as it comes and store it once the one before is stored.

    One batch is stored while the next is read and routed (parsing overlaps the insert, which
    runs on its own thread); batches are stored and acknowledged strictly in order, so a
    commit never passes an unstored event. Returns when a store fails or the worker stops.
    """
    in_flight: asyncio.Future[bool] | None = None
    try:
        async for events in batches:
            messages = [_raw_message(e) for e in events]
            try:
                routed = route(messages)
            except Exception as exc:  # a bug of ours: stop, the batch unacknowledged
                await stop_worker("routing a batch", exc)
                return
            if in_flight is not None and not await in_flight:
                return
            in_flight = asyncio.ensure_future(store(events, messages, routed))
    finally:
        if in_flight is not None:
            await in_flight


def consumer_positions(
    app: faust.App, topic: str, health: HealthState, now: float
) -> tuple[PartitionPosition, ...]:
    """Where each assigned partition of ``topic`` stands, from what the consumer already
    knows (no request to the broker: the page must answer while the broker does not)."""
    consumer = app.consumer
    try:
        assigned = sorted(tp for tp in consumer.assignment() if tp.topic == topic)
    except ConsumerNotStarted:
        return ()
    # Faust's own record of the committed offsets: read from the broker at each assignment,
    # updated at each commit (its monitor only sees this process's commits).
    committed: Mapping[TP, int | None] = getattr(consumer, "_committed_offset", {})
    positions = []
    for tp in assigned:
        try:
            end = consumer.highwater(tp)
            fetched_ms = _last_fetch_ms(consumer, tp)
        except AssertionError:  # aiokafka's answer for a partition revoked meanwhile
            continue
        fetched_at = None if fetched_ms is None else now - max(0.0, time.time() - fetched_ms / 1e3)
        stored = health.stored_offset(tp.partition)
        positions.append(
            PartitionPosition(tp.partition, end, committed.get(tp), stored, fetched_at)
        )
    return tuple(positions)


def _last_fetch_ms(consumer: Any, tp: TP) -> int | None:
    """aiokafka's ``last_poll_timestamp``: wall time (ms) of the last fetch response for
    ``tp``. Faust keeps the aiokafka consumer on its consumer thread and does not expose it."""
    client = getattr(getattr(consumer, "_thread", None), "_consumer", None)
    if client is None:
        return None
    return cast(int | None, client.last_poll_timestamp(tp))


CONTROL_BATCH_MAX = 500
CONTROL_BATCH_S = 0.2


class AsyncAgentVersions:
    """The agent version writer, called on the ClickHouse thread."""

    def __init__(self, thread: ClickHouseThread) -> None:
        self._thread = thread

    async def write(self, versions: Sequence[Positioned[AgentVersion]]) -> ControlWrite:
        return await self._thread.run(lambda c: AgentVersionWriter(c).write(versions))


class AsyncDeploymentEvents:
    """The deployment event writer, called on the ClickHouse thread."""

    def __init__(self, thread: ClickHouseThread) -> None:
        self._thread = thread

    async def write(
        self, states: Sequence[Positioned[DeploymentState]], received_at: datetime
    ) -> ControlWrite:
        return await self._thread.run(lambda c: DeploymentEventWriter(c).write(states, received_at))


class AsyncApprovals:
    """The approval writer, called on the ClickHouse thread."""

    def __init__(self, thread: ClickHouseThread) -> None:
        self._thread = thread

    async def write(self, records: Sequence[Positioned[Appended]]) -> ControlWrite:
        return await self._thread.run(lambda c: ApprovalWriter(c).write(records))


class AsyncDetectorEvents:
    """The judgement, alert and rollback writer, called on the ClickHouse thread."""

    def __init__(self, thread: ClickHouseThread) -> None:
        self._thread = thread

    async def write(self, table: EventTable[E], events: Sequence[Positioned[E]]) -> ControlWrite:
        return await self._thread.run(lambda c: DetectorEventWriter(c).write(table, events))


def install_control_agents(
    app: faust.App,
    settings: Settings,
    thread: ClickHouseThread,
    retry: Retrier,
    on_new_alerts: Callable[[Sequence[Alert]], None] | None = None,
) -> ControlRecorder:
    """Agents storing the control topics (``coalmine.versions``, ``coalmine.deployments``),
    the detector's (``coalmine.judgements``, ``coalmine.alerts``, ``coalmine.rollbacks``)
    and the approval topics in ClickHouse, apart from the span path: their own streams, small
    batches, acknowledged once stored. Each topic has one partition, so one worker of the
    group stores it, and that worker hands each alert it stores first to ``on_new_alerts``
    (the webhook)."""
    recorder = ControlRecorder(
        AsyncAgentVersions(thread),
        AsyncDeploymentEvents(thread),
        AsyncDetectorEvents(thread),
        AsyncApprovals(thread),
        retry=retry,
    )

    async def record_judgements(messages: Sequence[RawMessage]) -> bool:
        return await recorder.record_events(JUDGEMENTS_TABLE, messages)

    async def record_alerts(messages: Sequence[RawMessage]) -> bool:
        return await recorder.record_events(ALERTS_TABLE, messages, on_new_alerts)

    async def record_rollbacks(messages: Sequence[RawMessage]) -> bool:
        return await recorder.record_events(ROLLBACKS_TABLE, messages)

    for topic, record in (
        (VERSIONS, recorder.record_versions),
        (DEPLOYMENTS, recorder.record_deployments),
        (JUDGEMENTS, record_judgements),
        (ALERTS, record_alerts),
        (ROLLBACKS, record_rollbacks),
        (APPROVAL_REQUESTS, recorder.record_approval_requests),
        (APPROVAL_DECISIONS, recorder.record_approval_decisions),
    ):
        app.agent(_channel(app, settings, topic), concurrency=1, name=f"store-{topic.name}")(
            _acknowledged_once_stored(app, record, "storing control records")
        )
    return recorder


def _channel(app: faust.App, settings: Settings, topic: Topic) -> faust.TopicT:
    return app.topic(
        settings.topic(topic),
        key_type=bytes,
        value_type=bytes,
        partitions=topic.partitions(settings),
        replicas=settings.replication_factor,
    )


def _acknowledged_once_stored(
    app: faust.App, record: Callable[[Sequence[RawMessage]], Awaitable[bool]], what: str
) -> Callable[[faust.StreamT[bytes]], Awaitable[None]]:
    """An agent handing each small batch to ``record`` and acknowledging it once ``record``
    says it is done (False: the worker is stopping, the batch stays unacknowledged)."""

    async def agent(stream: faust.StreamT[bytes]) -> None:
        async for events in _event_batches(stream, CONTROL_BATCH_MAX, CONTROL_BATCH_S):
            try:
                stored = await record([_raw_message(e) for e in events])
            except Exception as exc:  # a write no retry can mend, or a bug: stop, unacknowledged
                log.critical("%s failed; stopping the worker: %s", what, exc, exc_info=True)
                await app.crash(exc)
                return
            if not stored:
                return
            for event in events:
                await stream.ack(event)

    return agent


def install_detector(
    app: faust.App, settings: Settings, thread: ClickHouseThread, retry: Retrier
) -> detect.Detector | None:
    """The detector (:mod:`streams.runtime.detect`) on ``app``, unless switched off."""
    if not settings.detector_enabled:
        return None
    writers = {
        topic.name: FaustTopicWriter(app, settings.topic(topic))
        for topic in (JUDGEMENTS, ALERTS, ROLLBACKS)
    }
    stored = detect.stored_partials(thread.run, settings.window_seconds)
    detector = detect.Detector(settings, writers, stored, retry)
    app.agent(_channel(app, settings, VERSION_STATS), concurrency=1, name="detector")(
        _acknowledged_once_stored(app, detector.on_partials, "judging window partials")
    )
    app.task(detect.follow_and_tick(app, settings, detector))

    @app.on_partitions_revoked.connect
    async def disown_agents(
        sender: faust.App, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
    ) -> None:
        detector.disown()  # another worker may judge them now; rebuilt at their next partial

    return detector


def install_health_page(
    app: faust.App, traces_topic: str, health: HealthState, counted: Sequence[object]
) -> None:
    """``/health``: ``ok`` or ``degraded`` with the reasons (see :mod:`streams.runtime.health`),
    and the fields of every ``counted`` counters object."""

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            now = time.monotonic()
            positions = consumer_positions(app, traces_topic, health, now)
            verdict = assess(health.snapshot(now, positions))
            return self.json(
                {
                    "status": verdict.status,
                    "reasons": list(verdict.reasons),
                    **verdict.details,
                    **{name: n for c in counted for name, n in vars(c).items()},
                }
            )


def install_pages(
    app: faust.App,
    settings: Settings,
    traces_topic: str,
    health: HealthState,
    counted: Sequence[object],
) -> None:
    """The worker's web pages: ``/health``, ``/sql`` and the status page."""
    install_health_page(app, traces_topic, health, counted)
    sqlpage.install(app, settings)
    statuspage.install(app, settings)


def create_app(
    settings: Settings,
    thread: ClickHouseThread,
    prices: PriceTable,
    spans: SpanSink | None = None,
) -> faust.App:
    """The worker's app: spans go to ``spans`` (default: ClickHouse through ``thread``);
    ``/sql`` queries run in a session of their own (:mod:`streams.runtime.sqlpage`)."""
    app = faust.App(
        settings.consumer_group,
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
        broker_credentials=faust_auth.broker_credentials(settings),
        autodiscover=False,
        store="memory://",
        datadir=str(settings.home / "faust"),
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        monitor=PerBatchMonitor(),
        topic_partitions=settings.traces_partitions,
        topic_replication_factor=settings.replication_factor,
        producer_acks=-1,
        broker_session_timeout=settings.session_timeout_s,
        web_enabled=True,
        web_bind=settings.worker_host,
        web_host=settings.worker_host,
        web_port=settings.worker_port,
        # Faust's own pages (/router, /table, /graph, statistics at /) would answer without
        # the status page's checks and show internals; the worker keeps no Faust tables.
        web_router_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
        # Larger fetches than Faust's defaults: measured +35% ingest throughput here
        # (`coalmine bench ingest`), at a few MB of memory per partition.
        broker_max_poll_records=5000,
        stream_buffer_maxsize=20000,
        consumer_max_fetch_size=8 * 1024 * 1024,
        # Messages wait unacknowledged for their window's row; a rebalance need not wait for
        # them, because they are delivered again from the committed offsets.
        stream_wait_empty=False,
    )
    traces = app.topic(
        settings.topic(TRACES),
        key_type=bytes,
        value_type=bytes,
        partitions=TRACES.partitions(settings),
        replicas=settings.replication_factor,
    )
    dead_letter_topic = app.topic(
        settings.topic(TRACES_DLQ),
        partitions=TRACES_DLQ.partitions(settings),
        replicas=settings.replication_factor,
    )

    def stopping() -> bool:
        return bool(app.should_stop)

    health = HealthState(time.monotonic)
    processor = IngestProcessor(
        spans=spans or AsyncSpanWriter(thread),
        dead_letters=FaustTopicWriter(app, dead_letter_topic.get_topic_name()),
        prices=prices,
        stopping=stopping,
        max_clock_skew_s=settings.max_clock_skew_s,
        retention_days=settings.spans_ttl_days,
        health=health,
        max_rows_per_write=settings.batch_max_events,
    )
    windows = (
        StreamWindows[EventT[bytes]](
            WindowAggregator(
                settings.topic(TRACES), settings.window_seconds, settings.allowed_lateness_s
            ),
            FaustTopicWriter(app, settings.topic(VERSION_STATS)),
            AsyncVersionStats(thread),
            Retrier(stopping, RetryPolicy(), health),
            time.time,
        )
        if settings.aggregation_enabled
        else None
    )
    progress = ProgressLog(started=time.monotonic(), interval_s=PROGRESS_INTERVAL_S)

    # Concurrency 1: with more, Faust can commit an offset past a batch still in flight
    # (faust-streaming issue #606). Workers scale out by partitions instead.
    @app.agent(traces, concurrency=1, name="ingest")
    async def ingest(stream: faust.StreamT[bytes]) -> None:
        async def stop_worker(what: str, exc: Exception) -> None:
            # A write no retry can mend (streams.failures), or a bug of ours. Carrying on
            # would stall or skip; stopping leaves the messages unacknowledged, and a restart
            # replays them exactly.
            error = not isinstance(exc, PipelineBugError)
            log.critical("%s failed; stopping the worker: %s", what, exc, exc_info=error)
            await app.crash(exc)

        async def store(
            events: Sequence[EventT[bytes]], messages: Sequence[RawMessage], routed: RoutedBatch
        ) -> bool:
            # Acknowledged only once stored: Faust's take() would acknowledge a batch even
            # when storing it was interrupted.
            try:
                epoch = windows.epoch if windows else 0
                owned = await processor.store(messages, routed)
                if owned is None:
                    return False
                health.stored(next_offsets((e.message.partition, e.message.offset) for e in events))
                ready = await windows.add(owned, _by_position(events), epoch) if windows else events
            except Exception as exc:
                await stop_worker("storing a batch", exc)
                return False
            for event in ready or ():
                await stream.ack(event)
            progress.maybe_log(processor.counters, time.monotonic())
            return True

        async def emit_closed_windows() -> None:
            assert windows is not None
            try:
                while await windows.flush_due(stream.ack):
                    await asyncio.sleep(WINDOW_TICK_S)
            except Exception as exc:
                await stop_worker("emitting window rows", exc)

        emitter = asyncio.ensure_future(emit_closed_windows()) if windows else None

        try:
            batches = _event_batches(stream, settings.batch_max_events, settings.batch_max_seconds)
            await store_in_order(batches, processor.route, store, stop_worker)
        finally:
            if emitter is not None:
                emitter.cancel()

    @app.on_partitions_revoked.connect
    async def forget_windows_and_positions(
        sender: faust.App, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
    ) -> None:
        health.forget_partitions()
        if windows is not None:
            await windows.forget()

    webhook = alert_webhook.install(app, settings)
    control = install_control_agents(
        app,
        settings,
        thread,
        Retrier(stopping, RetryPolicy(), health),
        on_new_alerts=webhook.submit if webhook else None,
    )
    detector = install_detector(app, settings, thread, Retrier(stopping, RetryPolicy(), health))
    counted = [x.counters for x in (processor, windows, control, webhook, detector) if x]
    install_pages(app, settings, traces.get_topic_name(), health, counted)

    return app
