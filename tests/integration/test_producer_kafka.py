"""The SDK's Kafka publisher and ``coalmine generate`` against the session's real broker."""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic  # not re-exported by confluent_kafka.admin

from schemas.topics import TRACES
from schemas.trace import MAX_ATTRIBUTE_VALUE_CHARS, MAX_EVENT_BYTES, TraceEvent
from streams.devtools import generate
from streams.sdk import BatchLimits, KafkaPublisher, SdkSettings
from streams.settings import Settings
from tests.integration.harness import consume_all, message_spans

pytestmark = pytest.mark.integration

UNREACHABLE = "127.0.0.1:1"


def _events(n_requests: int, seed: int = 3) -> list[TraceEvent]:
    plan = generate.TrafficPlan(rate=100.0, seed=seed, canary_share=0.2)
    return list(generate.simulate(plan, datetime(2026, 1, 1, tzinfo=UTC), n_requests))


def _new_topic(bootstrap: str, topic: str | None = None, partitions: int = 3) -> str:
    topic = topic or f"test.producer.{uuid.uuid4().hex}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        future.result(timeout=30)
    return topic


class DeliveryLog:
    def __init__(self) -> None:
        self.reports: dict[str, str | None] = {}
        self.lock = threading.Lock()

    def __call__(self, event_id: str, error: str | None) -> None:
        with self.lock:
            assert event_id not in self.reports, "one report per event"
            self.reports[event_id] = error


def test_published_events_come_back_unchanged_and_in_trace_order(kafka_bootstrap: str) -> None:
    events = _events(400)
    topic = _new_topic(kafka_bootstrap)
    log = DeliveryLog()
    # Small batches: enough messages (keys) to spread over every partition.
    publisher = KafkaPublisher(
        kafka_bootstrap, topic, on_delivery=log, batch=BatchLimits(max_spans=5)
    )
    for event in events:
        publisher.publish(event)
    assert publisher.flush(30) == 0
    publisher.close()

    stats = publisher.stats
    assert (stats.published, stats.delivered, stats.failed, stats.dropped) == (
        len(events),
        len(events),
        0,
        0,
    )
    assert log.reports == {str(e.event_id): None for e in events}

    messages = consume_all(
        kafka_bootstrap, topic, len(events), count=lambda m: len(message_spans(m))
    )
    received = []
    for msg in messages:
        spans = message_spans(msg)
        assert len(spans) <= 5
        batch = [TraceEvent.model_validate_json(span) for span in spans]
        assert msg.key() == batch[0].trace_id.encode()
        assert dict(msg.headers() or []) == {
            "content-type": b"application/json",
            "schema_version": b"1",
        }
        received.extend(batch)
    assert sorted(received, key=lambda e: e.event_id) == sorted(events, key=lambda e: e.event_id)
    # A request's spans travel in one message (or, past 5, in messages keyed by the request's
    # trace on one partition), so they arrive in the order published.
    sent_order: dict[str, list[uuid.UUID]] = defaultdict(list)
    received_order: dict[str, list[uuid.UUID]] = defaultdict(list)
    for event in events:
        sent_order[event.trace_id].append(event.event_id)
    for event in received:
        received_order[event.trace_id].append(event.event_id)
    assert received_order == sent_order
    assert len({m.partition() for m in messages}) == 3  # traces really were spread out


def test_an_unreachable_broker_never_raises_and_counts_failures() -> None:
    events = _events(10)
    log = DeliveryLog()
    publisher = KafkaPublisher(
        UNREACHABLE,
        "coalmine.traces",
        on_delivery=log,
        extra_config={"message.timeout.ms": "1500", "socket.connection.setup.timeout.ms": "1000"},
    )
    began = time.monotonic()
    for event in events:
        publisher.publish(event)
    publish_s = time.monotonic() - began
    publisher.close(timeout=15)

    assert publish_s < 1.0  # never blocks the caller
    stats = publisher.stats
    assert (stats.published, stats.delivered, stats.failed, stats.dropped) == (
        len(events),
        0,
        len(events),
        0,
    )
    assert set(log.reports) == {str(e.event_id) for e in events}
    assert all(error for error in log.reports.values())


def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    events = _events(10)
    publisher = KafkaPublisher(
        UNREACHABLE,
        "coalmine.traces",
        max_queue_messages=5,
        extra_config={"message.timeout.ms": "1000"},
    )
    for event in events:
        publisher.publish(event)
    queued = publisher.stats
    publisher.close(timeout=15)

    assert (queued.published, queued.dropped) == (5, len(events) - 5)
    final = publisher.stats
    assert final.failed == 5
    assert final.published == final.delivered + final.failed
    publisher.publish(events[0])  # after close: dropped and counted, never raised
    assert publisher.stats.dropped == len(events) - 4


def test_the_queue_bound_of_the_settings_is_the_publishers() -> None:
    settings = SdkSettings.from_env(
        {"COALMINE_KAFKA_BOOTSTRAP": UNREACHABLE, "COALMINE_SDK_QUEUE_MAX_MESSAGES": "3"}
    )
    publisher = KafkaPublisher.from_settings(settings, extra_config={"message.timeout.ms": "1000"})
    for event in _events(10)[:8]:
        publisher.publish(event)
    queued = publisher.stats
    publisher.close(timeout=15)
    assert (queued.published, queued.dropped) == (3, 5)


def test_generate_run_delivers_everything_it_reports(kafka_settings: Settings) -> None:
    settings = replace(kafka_settings, topic_prefix=f"test-gen-{uuid.uuid4().hex[:12]}")
    plan = generate.TrafficPlan(rate=2000.0, duration_s=None, requests=300, seed=11)
    reports: list[generate.GeneratorProgress] = []

    assert generate.run(settings, plan, progress=reports.append) == 0

    final = reports[-1]
    assert final.done
    assert final.requests == 300
    assert final.spans == final.delivered > 300
    assert (final.failed, final.dropped, final.invalid) == (0, 0, 0)
    messages = consume_all(
        settings.kafka_bootstrap,
        settings.topic(TRACES),
        final.delivered,
        count=lambda m: len(message_spans(m)),
    )
    events = [TraceEvent.model_validate_json(s) for m in messages for s in message_spans(m)]
    assert len(events) == final.delivered
    assert sum(e.kind == "request" for e in events) == 300
    # run() created the topic with the configured partition count.
    assert len({m.partition() for m in messages}) == settings.traces_partitions
    # Requests end "now": none is recorded as ending after it was published.
    assert max(e.end_time for e in events) <= datetime.now(UTC)


def test_generate_run_stops_when_asked(kafka_settings: Settings) -> None:
    settings = replace(kafka_settings, topic_prefix=f"test-gen-{uuid.uuid4().hex[:12]}")
    plan = generate.TrafficPlan(rate=50.0, duration_s=None, requests=None, seed=1)
    stop = threading.Event()
    reports: list[generate.GeneratorProgress] = []
    timer = threading.Timer(3.0, stop.set)
    timer.start()
    began = time.monotonic()
    code = generate.run(settings, plan, progress=reports.append, stop=stop)
    assert time.monotonic() - began < 15
    assert code == 0
    # Sending starts once the topics exist and the router has read the deployments, so the
    # seconds before the stop are not all sending: requests were paced while it lasted.
    final = reports[-1]
    assert 1 <= final.requests <= plan.rate * final.elapsed_s + 1


def test_an_event_too_big_for_ingest_is_dropped_and_counted() -> None:
    # Valid by the schema, yet over MAX_EVENT_BYTES once encoded (3-byte UTF-8 characters):
    # ingest would reject it, so the SDK does not send it.
    big = _events(1)[-1].model_copy(
        update={"attributes": {f"a{n}": "界" * MAX_ATTRIBUTE_VALUE_CHARS for n in range(32)}}
    )
    TraceEvent.model_validate(big.model_dump())
    assert len(big.model_dump_json().encode()) > MAX_EVENT_BYTES
    publisher = KafkaPublisher(UNREACHABLE, "coalmine.traces")
    publisher.publish(big)
    publisher.close(timeout=1)
    assert (publisher.stats.published, publisher.stats.dropped) == (0, 1)
