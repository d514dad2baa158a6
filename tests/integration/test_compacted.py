"""The one compacted-topic reader on a real broker: an end that no record fills (a
transaction's commit marker) is still reached, by the table reader and by the follower."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import replace

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from schemas.topics import VERSIONS
from streams.sdk.compacted import Record, latest, read_to_end
from streams.sdk.follow import TopicFollower
from streams.sdk.kafka_security import client_config
from streams.settings import Settings
from streams.topics import TopicSpec, ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

TIMEOUT_S = 30.0


def test_an_end_after_a_commit_marker_is_reached_by_the_reader_and_the_follower(
    kafka_settings: Settings,
) -> None:
    settings = replace(kafka_settings, topic_prefix=f"t{uuid.uuid4().hex[:10]}")
    ensure_topics(settings, [TopicSpec.of(VERSIONS, settings)])
    topic = settings.topic(VERSIONS)
    producer = Producer({**client_config(settings), "transactional.id": uuid.uuid4().hex})
    producer.init_transactions(TIMEOUT_S)
    producer.begin_transaction()
    producer.produce(topic, key=b"bot/v1", value=b"first")
    producer.produce(topic, key=b"bot/v1", value=b"second")
    producer.commit_transaction(TIMEOUT_S)
    # The coordinator writes the commit marker after answering the commit; until then a
    # read-committed reader's end is the open transaction's start (0).
    _wait_for_committed_end(settings, topic, 3)  # the marker takes the last offset

    assert latest(read_to_end(client_config(settings), topic, TIMEOUT_S)) == {b"bot/v1": b"second"}

    received: list[Record] = []
    caught_up = threading.Event()
    follower = TopicFollower(
        settings, [topic], received.extend, name="test-follower", on_caught_up=caught_up.set
    )
    follower.start()
    try:
        assert caught_up.wait(TIMEOUT_S), "the follower never reached the end"
    finally:
        follower.close()
    assert [r.value for r in received] == [b"first", b"second"]


def _wait_for_committed_end(settings: Settings, topic: str, end: int) -> None:
    consumer = Consumer({**client_config(settings), "group.id": uuid.uuid4().hex})
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while consumer.get_watermark_offsets(TopicPartition(topic, 0), TIMEOUT_S)[1] < end:
            assert time.monotonic() < deadline, f"{topic} never reached offset {end}"
            time.sleep(0.05)
    finally:
        consumer.close()
