"""A real ``coalmine controller`` process, and what the controller's tests produce and read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from pydantic import BaseModel

from schemas.command import CommandOutcome
from schemas.deployment import DeploymentState
from schemas.topics import COMMAND_OUTCOMES, DEPLOYMENTS, VERSIONS, Topic
from schemas.version import AgentBundle, AgentVersion, ModelSpec, bundle_digest
from streams.errors import CoalmineError
from streams.sdk.kafka_security import client_config
from streams.settings import Settings

READY_LINE = b"controller started"
READY_TIMEOUT_S = 60.0


class ControllerProcess:
    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start a controller and return once it has rebuilt its state and subscribed."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        ready_before = self._log().count(READY_LINE)
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "controller", "--gate-interval", "0.5"],
                env={**os.environ, **self.settings.as_env()},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1
        deadline = time.monotonic() + READY_TIMEOUT_S
        while self._log().count(READY_LINE) == ready_before:
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise CoalmineError(f"the controller did not start:\n{self.log_tail()}")
            time.sleep(0.05)

    def _log(self) -> bytes:
        return self.log_path.read_bytes() if self.log_path.exists() else b""

    def kill(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.send_signal(signal.SIGKILL)
            process.wait()

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self._log().decode(errors="replace").splitlines()[-lines:])


@contextmanager
def running_controller(settings: Settings, log_path: Path) -> Iterator[ControllerProcess]:
    process = ControllerProcess(settings, log_path)
    process.start()
    try:
        yield process
    finally:
        process.kill()


def produce(settings: Settings, topic: Topic, records: list[tuple[str, BaseModel]]) -> None:
    producer = Producer({**client_config(settings), "acks": "all", "enable.idempotence": True})
    for key, value in records:
        producer.produce(settings.topic(topic), key=key.encode(), value=value.model_dump_json())
    assert producer.flush(30) == 0


def register(settings: Settings, agent: str, *versions: str) -> dict[str, str]:
    """Publish versions of ``agent`` on ``coalmine.versions``; returns their digests."""
    records: list[tuple[str, BaseModel]] = []
    for label in versions:
        bundle = AgentBundle(
            prompts={"system": f"You are {agent} {label}."},
            model=ModelSpec(provider="openai", model="gpt-4o-mini"),
        )
        version = AgentVersion(
            agent=agent,
            version=label,
            digest=bundle_digest(bundle),
            created_at=datetime.now(UTC),
            created_by="test",
            bundle=bundle,
        )
        records.append((version.key, version))
    produce(settings, VERSIONS, records)
    return {v.version: v.digest for _, v in records if isinstance(v, AgentVersion)}


def read_all(settings: Settings, topic: Topic) -> list[bytes]:
    """Every record value of a one-partition topic so far, in order (compaction aside)."""
    consumer = Consumer(
        {
            **client_config(settings),
            "group.id": f"test-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    partition = TopicPartition(settings.topic(topic), 0, OFFSET_BEGINNING)
    try:
        _, end = consumer.get_watermark_offsets(partition, timeout=10)
        consumer.assign([partition])
        values: list[bytes] = []
        position = 0
        deadline = time.monotonic() + 30
        while position < end and time.monotonic() < deadline:
            for message in consumer.consume(1000, timeout=0.5):
                assert message.error() is None, message.error()
                values.append(message.value() or b"")
                position = (message.offset() or 0) + 1
        assert position >= end, f"read {position} of {end} records of {topic.name}"
        return values
    finally:
        consumer.close()


def deployment_records(settings: Settings) -> list[DeploymentState]:
    return [DeploymentState.model_validate_json(v) for v in read_all(settings, DEPLOYMENTS)]


def outcomes(settings: Settings) -> list[CommandOutcome]:
    return [CommandOutcome.model_validate_json(v) for v in read_all(settings, COMMAND_OUTCOMES)]


def wait_for_state(
    settings: Settings, agent: str, done: Callable[[DeploymentState], bool], timeout_s: float = 30
) -> DeploymentState:
    """The agent's latest deployment record once ``done`` holds for it."""
    deadline = time.monotonic() + timeout_s
    latest = None
    while time.monotonic() < deadline:
        mine = [s for s in deployment_records(settings) if s.agent == agent]
        latest = mine[-1] if mine else None
        if latest is not None and done(latest):
            return latest
        time.sleep(0.3)
    raise AssertionError(f"{agent} never got there; last state: {latest}")
