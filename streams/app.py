"""The Faust application: topics, the ingest agent and web pages. Wiring only.

Business logic lives in :mod:`streams.ingest` and :mod:`streams.clickhouse`; the agents here
hand batches to it and acknowledge them once they are stored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar, cast

import faust
from clickhouse_connect.driver.client import Client
from faust.streams import Stream
from faust.types import EventT
from faust.web import Request, Response, View

from streams import clickhouse
from streams.ingest import (
    SPAN_COLUMNS,
    Header,
    IngestProcessor,
    ProgressLog,
    RawMessage,
    SpanSink,
)
from streams.pricing import PriceTable
from streams.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
PROGRESS_INTERVAL_S = 10.0


class ClickHouseThread:
    """Runs blocking ClickHouse calls on one dedicated thread.

    The client is synchronous (chDB even runs inside this process), so calls leave the event
    loop free for Kafka heartbeats, and one thread means one call at a time on the client.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")

    async def run(self, call: Callable[[Client], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, call, self._client)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()


class AsyncSpanWriter:
    """The span writer, called on the ClickHouse thread."""

    def __init__(self, thread: ClickHouseThread) -> None:
        self._thread = thread

    async def write(self, rows: Sequence[Sequence[Any]]) -> int:
        return await self._thread.run(
            lambda client: clickhouse.SpanWriter(client, SPAN_COLUMNS).write(rows)
        )


class FaustDeadLetters:
    """Dead-letter records sent through the app's producer, waiting for the broker's ack."""

    def __init__(self, app: faust.App, topic: str) -> None:
        self._app = app
        self._topic = topic

    async def send(self, key: bytes | None, value: bytes | None, headers: list[Header]) -> None:
        await self._app.producer.send_and_wait(
            self._topic, key, value, partition=None, timestamp=None, headers=headers
        )


def _event_batches(
    stream: faust.StreamT[bytes], max_events: int, within_s: float
) -> AsyncIterator[Sequence[EventT[bytes]]]:
    """Batches of unacknowledged events. Faust types ``noack_take`` as yielding values and only
    declares it on the concrete ``Stream``; at run time it yields the events themselves."""
    batches = cast(Stream[bytes], stream).noack_take(max_events, within=within_s)
    return cast(AsyncIterator[Sequence[EventT[bytes]]], batches)


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
    )


def create_app(
    settings: Settings,
    thread: ClickHouseThread,
    prices: PriceTable,
    spans: SpanSink | None = None,
) -> faust.App:
    """The worker's app: spans go to ``spans`` (default: ClickHouse through ``thread``),
    ``/sql`` queries run on ``thread``."""
    app = faust.App(
        settings.consumer_group,
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap.split(",")],
        autodiscover=False,
        store="memory://",
        datadir=str(settings.home / "faust"),
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        topic_partitions=settings.traces_partitions,
        topic_replication_factor=settings.replication_factor,
        producer_acks=-1,
        broker_session_timeout=settings.session_timeout_s,
        web_enabled=True,
        web_bind=settings.worker_host,
        web_host=settings.worker_host,
        web_port=settings.worker_port,
        # Larger fetches than Faust's defaults: measured +35% ingest throughput here
        # (`coalmine bench ingest`), at a few MB of memory per partition.
        broker_max_poll_records=5000,
        stream_buffer_maxsize=20000,
        consumer_max_fetch_size=8 * 1024 * 1024,
    )
    traces = app.topic(
        settings.topic("traces"),
        key_type=bytes,
        value_type=bytes,
        partitions=settings.traces_partitions,
        replicas=settings.replication_factor,
    )
    dead_letter_topic = app.topic(
        settings.topic("traces.dlq"),
        partitions=settings.traces_partitions,
        replicas=settings.replication_factor,
    )
    processor = IngestProcessor(
        spans=spans or AsyncSpanWriter(thread),
        dead_letters=FaustDeadLetters(app, dead_letter_topic.get_topic_name()),
        prices=prices,
        stopping=lambda: bool(app.should_stop),
    )
    progress = ProgressLog(started=time.monotonic(), interval_s=PROGRESS_INTERVAL_S)

    # Concurrency 1: with more, Faust can commit an offset past a batch still in flight
    # (faust-streaming issue #606). Workers scale out by partitions instead.
    @app.agent(traces, concurrency=1, name="ingest")
    async def ingest(stream: faust.StreamT[bytes]) -> None:
        async def store(events: Sequence[EventT[bytes]]) -> bool:
            # Acknowledged only once stored: Faust's take() would acknowledge a batch even
            # when storing it was interrupted.
            if not await processor.process([_raw_message(e) for e in events]):
                return False
            for event in events:
                await stream.ack(event)
            progress.maybe_log(processor.counters, time.monotonic())
            return True

        # One batch is stored while the next one is read; batches are stored and
        # acknowledged strictly in order, so a commit never passes an unstored event.
        in_flight: asyncio.Future[bool] | None = None
        try:
            async for events in _event_batches(
                stream, settings.batch_max_events, settings.batch_max_seconds
            ):
                if in_flight is not None and not await in_flight:
                    return
                in_flight = asyncio.ensure_future(store(events))
        finally:
            if in_flight is not None:
                await in_flight

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok", **processor.counters.__dict__})

    @app.page("/sql")
    class Sql(View):
        """Read-only SQL for ``coalmine sql`` while this worker holds the embedded database."""

        async def post(self, request: Request) -> Response:
            body = await request.json()
            query = body.get("query") if isinstance(body, dict) else None
            if not isinstance(query, str) or not query.strip():
                return self.json({"error": 'body must be {"query": "SELECT ..."}'}, status=400)
            try:
                columns, rows = await thread.run(lambda c: clickhouse.query_readonly(c, query))
            except clickhouse.ClickHouseQueryError as exc:
                return self.json({"error": str(exc)}, status=400)
            payload = json.dumps({"columns": columns, "rows": rows}, default=str)
            return self.bytes(payload.encode(), content_type="application/json")

    return app
