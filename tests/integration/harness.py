"""A real ``coalmine worker`` process for integration tests, isolated per test.

Each test gets its own topic prefix (so its own topics and consumer group), its own chDB
folder and web port, on the session's real broker.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Message

from schemas.framing import split_spans
from streams.devtools import localkafka
from streams.devtools.child_process import killed_after
from streams.devtools.worker_process import WorkerProcess
from streams.sdk import KafkaPublisher, Tracer
from streams.sdk.kafka_security import client_config
from streams.settings import Settings
from streams.topics import ensure_topics


def wait_for(worker: WorkerProcess, query: str, expected: Any, timeout_s: float = 120.0) -> Any:
    """Poll ``query`` through the worker until it returns ``expected``; returns the last value."""
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        value = worker.scalar(query)
        if value == expected:
            return value
        time.sleep(0.5)
    return value


def isolated_settings(base: Settings, tmp_path: Path) -> Settings:
    return replace(
        base,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}",
        clickhouse_url=f"chdb://{tmp_path / 'chdb'}",
        worker_port=localkafka.free_loopback_port(),
        batch_max_seconds=0.2,
        # A killed worker's partitions move to its successor after this long.
        session_timeout_s=10.0,
    )


@contextmanager
def killed_mid_stream(
    settings: Settings, log_path: Path, produce: Callable[[], None], kills: int, seed: int
) -> Iterator[WorkerProcess]:
    """A worker SIGKILLed ``kills`` times at seeded random points while ``produce`` runs over
    and over in a thread, restarted each time. Yields the last worker once production has
    stopped; kills it afterwards whatever happened."""
    rng = random.Random(seed)
    done = threading.Event()

    def keep_producing() -> None:
        while not done.is_set():
            produce()
            time.sleep(0.1)

    process = WorkerProcess(settings, log_path)
    process.start()
    producer = threading.Thread(target=keep_producing)
    producer.start()
    try:
        try:
            for _ in range(kills):
                time.sleep(rng.uniform(1.0, 6.0))
                process.kill()
                time.sleep(rng.uniform(0.0, 1.0))
                process.start()
            time.sleep(2)
        finally:
            done.set()
            producer.join()
        yield process
    finally:
        process.kill()


@contextmanager
def running_worker(settings: Settings, log_path: Path) -> Iterator[WorkerProcess]:
    """A worker on ``settings``' topics (created first); killed afterwards."""
    ensure_topics(settings)
    with killed_after(WorkerProcess(settings, log_path)) as process:
        yield process


@pytest.fixture
def worker(kafka_settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A running worker on its own topics and chDB folder; stopped after the test."""
    with running_worker(isolated_settings(kafka_settings, tmp_path), tmp_path / "worker.log") as w:
        yield w


def message_spans(message: Message) -> list[bytes]:
    """The spans a ``coalmine.traces`` message carries (one, or a batch)."""
    value = message.value() or b""
    return split_spans(value) or [value]


def consume_spans(kafka: Settings | str, topic: str, expected: int) -> list[bytes]:
    """Every span of ``topic``'s messages, read until ``expected`` spans arrived."""
    messages = consume_all(kafka, topic, expected, count=lambda m: len(message_spans(m)))
    return [span for message in messages for span in message_spans(message)]


def consume_all(
    kafka: Settings | str,
    topic: str,
    expected: int,
    timeout_s: float = 60.0,
    count: Callable[[Message], int] = lambda _: 1,
) -> list[Message]:
    """Read ``topic`` from the start until ``expected`` records arrived (or time runs out);
    ``count``: how much one record counts (its spans, say).
    ``kafka``: the settings to connect with, or the bootstrap of a plaintext broker."""
    connect = client_config(kafka) if isinstance(kafka, Settings) else {"bootstrap.servers": kafka}
    consumer = Consumer(
        {
            **connect,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    received: list[Message] = []
    counted = 0
    deadline = time.monotonic() + timeout_s
    try:
        while counted < expected and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                assert message.error() is None, message.error()
                received.append(message)
                counted += count(message)
    finally:
        consumer.close()
    return received


def headers_of(message: Message) -> dict[str, bytes]:
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {key: value.encode() if isinstance(value, str) else value or b"" for key, value in pairs}


class SpanStream:
    """Produces request spans of agent :attr:`AGENT` through the SDK in a thread until
    stopped; counts them."""

    AGENT = "sql-page-bot"

    def __init__(self, settings: Settings) -> None:
        self._publisher = KafkaPublisher.from_settings(settings)
        self._tracer = Tracer(self.AGENT, "v1", self._publisher)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self.produced = 0

    def __enter__(self) -> SpanStream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        assert self._publisher.flush(30) == 0
        self._publisher.close(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            for _ in range(10):
                with self._tracer.request("answer"):
                    pass
                self.produced += 1
            self._publisher.flush(5)
            time.sleep(0.2)
