"""The local broker, for real: topics, produce and consume with both Kafka clients we use,
re-runs of ``up``, restarts, and the failures a developer meets (port taken, broker crash)."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient

# NewTopic lives in the C extension; confluent_kafka.admin imports it without re-exporting it
# in its type stubs.
from confluent_kafka.cimpl import NewTopic

from streams.devtools import localkafka
from streams.errors import LocalKafkaError
from streams.settings import Settings

pytestmark = pytest.mark.integration


def _new_topic(bootstrap: str, partitions: int = 1) -> str:
    topic = f"test.localkafka.{uuid.uuid4().hex}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions)])
    futures[topic].result(timeout=30)
    return topic


def _produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(err)

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    producer.produce(
        topic, key=key, value=value, headers=[("source", b"test")], on_delivery=on_delivery
    )
    assert producer.flush(30) == 0, "the message was not delivered within 30 s"
    assert errors == []


def _consume_one(bootstrap: str, topic: str) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            key, value, headers = msg.key(), msg.value(), msg.headers()
            assert isinstance(key, bytes)
            assert isinstance(value, bytes)
            assert isinstance(headers, list)
            return key, value, [(name, raw) for name, raw in headers if isinstance(raw, bytes)]
    finally:
        consumer.close()
    pytest.fail(f"no message arrived on {topic} within 30 s")


def test_confluent_kafka_creates_a_topic_produces_and_consumes(kafka_bootstrap: str) -> None:
    topic = _new_topic(kafka_bootstrap, partitions=3)
    _produce(kafka_bootstrap, topic, b"trace-1", b'{"hello": "kafka"}')
    assert _consume_one(kafka_bootstrap, topic) == (
        b"trace-1",
        b'{"hello": "kafka"}',
        [("source", b"test")],
    )


async def _aiokafka_round_trip(bootstrap: str, topic: str) -> bytes:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"from aiokafka", key=b"k")
    finally:
        await producer.stop()
    # A consumer group exercises the group protocol (join, sync, commit) Faust relies on.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"test-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        msg = await asyncio.wait_for(consumer.getone(), timeout=30)
        await consumer.commit()
    finally:
        await consumer.stop()
    value: bytes = msg.value
    return value


def test_aiokafka_used_by_faust_speaks_this_broker_version(kafka_bootstrap: str) -> None:
    topic = _new_topic(kafka_bootstrap)
    assert asyncio.run(_aiokafka_round_trip(kafka_bootstrap, topic)) == b"from aiokafka"


def test_up_again_is_safe_and_status_says_it_answers(
    kafka_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    localkafka.up(kafka_settings)
    assert "already running" in capsys.readouterr().out
    assert localkafka.status(kafka_settings)
    out = capsys.readouterr().out
    assert f"{kafka_settings.kafka_bootstrap}, answering" in out
    assert localkafka.KAFKA_VERSION in out


def test_another_home_on_the_same_port_is_refused(kafka_settings: Settings, tmp_path: Path) -> None:
    other = replace(kafka_settings, home=tmp_path)
    with pytest.raises(LocalKafkaError, match="in use by a Kafka broker this home did not start"):
        localkafka.up(other)


def _settings(home: Path, jars: Path) -> Settings:
    port = localkafka.free_loopback_port()
    return Settings(home=home, kafka_bootstrap=f"127.0.0.1:{port}", kafka_jars_dir=jars)


def test_a_port_held_by_another_program_is_refused(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        settings = Settings(home=tmp_path, kafka_bootstrap=f"127.0.0.1:{port}")
        with pytest.raises(LocalKafkaError, match="already in use by another program"):
            localkafka.up(settings)


def test_a_broker_that_dies_during_start_is_reported_with_its_log(tmp_path: Path) -> None:
    # A "complete" jar folder without jars, and storage that needs no formatting: java starts
    # and exits at once because kafka.Kafka is nowhere on the classpath.
    jars = tmp_path / "libs"
    jars.mkdir()
    (jars / localkafka.COMPLETE_MARKER).write_text(localkafka.KAFKA_VERSION)
    settings = _settings(tmp_path / "home", jars)
    data = localkafka.broker_paths(settings).data
    data.mkdir(parents=True)
    (data / "meta.properties").write_text("version=1\n")
    with pytest.raises(LocalKafkaError, match="exited during start") as failure:
        localkafka.up(settings)
    assert "kafka.Kafka" in str(failure.value), "the JVM's own complaint is shown"
    assert not localkafka.broker_paths(settings).pid.exists()


def test_down_leaves_a_process_alone_that_is_not_our_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(home=tmp_path)
    paths = localkafka.broker_paths(settings)
    paths.root.mkdir(parents=True)
    paths.pid.write_text(f"{os.getpid()}\n")  # a stale pid file now naming this very process
    localkafka.down(settings)
    assert "not running" in capsys.readouterr().out
    assert not paths.pid.exists()
    assert not localkafka.status(settings)


def test_data_survives_a_restart(kafka_settings: Settings, tmp_path: Path) -> None:
    settings = _settings(tmp_path, localkafka.jars_dir(kafka_settings))
    with localkafka.LocalKafka(settings) as bootstrap:
        topic = _new_topic(bootstrap)
        _produce(bootstrap, topic, b"k", b"kept")
    assert not localkafka.broker_paths(settings).pid.exists()
    with localkafka.LocalKafka(settings) as bootstrap:
        assert _consume_one(bootstrap, topic)[1] == b"kept"
