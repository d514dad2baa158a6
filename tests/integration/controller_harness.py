"""A running ``coalmine controller``, and what the controller's tests produce and read."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from pydantic import BaseModel

from schemas.command import CommandOutcome
from schemas.deployment import DeploymentState
from schemas.topics import COMMAND_OUTCOMES, DEPLOYMENTS, Topic
from streams.devtools.child_process import killed_after
from streams.devtools.control_records import ControlWriter, example_version
from streams.devtools.controller_process import ControllerProcess
from streams.sdk.kafka_security import client_config
from streams.settings import Settings


def coalmine(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``coalmine ARGS`` run on ``settings``, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env={**os.environ, **settings.as_env()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@contextmanager
def running_controller(settings: Settings, log_path: Path) -> Iterator[ControllerProcess]:
    with killed_after(ControllerProcess(settings, log_path)) as process:
        yield process


def produce(settings: Settings, topic: Topic, records: list[tuple[str, BaseModel]]) -> None:
    with ControlWriter(settings) as writer:
        for key, value in records:
            writer.record(topic, key, value)


def register(settings: Settings, agent: str, *versions: str) -> dict[str, str]:
    """Publish versions of ``agent`` on ``coalmine.versions``; returns their digests."""
    made = [example_version(agent, label) for label in versions]
    with ControlWriter(settings) as writer:
        for version in made:
            writer.version(version)
    return {v.version: v.digest for v in made}


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


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Whether ``condition()`` came true within ``timeout_s`` (asked every 50 ms)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


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
