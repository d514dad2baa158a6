"""A real ``coalmine worker`` process for integration tests, isolated per test.

Each test gets its own topic prefix (so its own topics and consumer group), its own chDB
folder and web port, on the session's real broker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Message

from streams import localkafka, sqlcli
from streams.settings import Settings
from streams.topics import ensure_topics

READY_TIMEOUT_S = 90.0


class WorkerProcess:
    """Starts, kills and restarts ``coalmine worker`` as a child process."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, **self.settings.as_env(), "COALMINE_LOG_LEVEL": "info"}
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise AssertionError(f"worker exited early:\n{self.log_tail()}")
            if sqlcli.worker_answers(self.settings.worker_url):
                return
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {READY_TIMEOUT_S}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no final commit — a crash."""
        self._signal(signal.SIGKILL)

    def stop(self) -> int:
        """SIGTERM and wait for the clean exit; returns the exit code."""
        return self._signal(signal.SIGTERM)

    def _signal(self, signum: int) -> int:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return process.returncode if process else 0
        process.send_signal(signum)
        try:
            return process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError(f"worker ignored signal {signum}:\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def sql(self, query: str) -> list[Sequence[Any]]:
        """Read-only SQL through the running worker (it holds the embedded database)."""
        return sqlcli.fetch(self.settings, query)[1]

    def scalar(self, query: str) -> Any:
        return self.sql(query)[0][0]

    def wait_for(self, query: str, expected: Any, timeout_s: float = 120.0) -> Any:
        """Poll ``query`` until it returns ``expected``; returns the last value seen."""
        deadline = time.monotonic() + timeout_s
        value = None
        while time.monotonic() < deadline:
            value = self.scalar(query)
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
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                received.append(message)
    finally:
        consumer.close()
    return received


def headers_of(message: Message) -> dict[str, bytes]:
    return {key: value for key, value in (message.headers() or [])}


def decoded(value: bytes | None) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(value or b"null")
    return result


Waiter = Callable[[], bool]
