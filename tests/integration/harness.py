"""A real ``coalmine worker`` process for integration tests, isolated per test.

Each test gets its own topic prefix (so its own topics and consumer group), its own chDB
folder and web port, on the session's real broker.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Message

from streams import localkafka
from streams.settings import Settings
from streams.topics import ensure_topics
from streams.worker_process import WorkerProcess


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


@pytest.fixture
def worker(kafka_settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A running worker on its own topics and chDB folder; stopped after the test."""
    settings = isolated_settings(kafka_settings, tmp_path)
    ensure_topics(settings)
    process = WorkerProcess(settings, tmp_path / "worker.log")
    process.start()
    try:
        yield process
    finally:
        process.kill()


def consume_all(
    bootstrap: str, topic: str, expected: int, timeout_s: float = 60.0
) -> list[Message]:
    """Read ``topic`` from the start until ``expected`` records arrived (or time runs out)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    received: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(received) < expected and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                assert message.error() is None, message.error()
                received.append(message)
    finally:
        consumer.close()
    return received


def headers_of(message: Message) -> dict[str, bytes]:
    raw = message.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return {key: value.encode() if isinstance(value, str) else value or b"" for key, value in pairs}
