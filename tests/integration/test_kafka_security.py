"""The ``COALMINE_KAFKA_*`` security settings against the session broker's SASL listener:
SDK, admin, worker (Faust/aiokafka) and a confluent-kafka consumer all authenticate, and a
wrong password gets nothing in."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from streams.localkafka import SaslListener
from streams.producer import KafkaPublisher, Tracer
from streams.settings import SASL_MECHANISMS, Settings
from streams.topics import ensure_topics
from tests.integration.harness import consume_all, isolated_settings, running_worker, wait_for

pytestmark = pytest.mark.integration


def over_sasl(settings: Settings, listener: SaslListener, mechanism: str) -> Settings:
    name, password = listener.users[0]
    return replace(
        settings,
        kafka_bootstrap=f"127.0.0.1:{listener.port}",
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism=mechanism,
        kafka_username=name,
        kafka_password=password,
    )


def publish_requests(settings: Settings, count: int, **publisher_args: object) -> KafkaPublisher:
    """``count`` request spans through the SDK; returns the closed publisher."""
    publisher = KafkaPublisher.from_settings(settings, **publisher_args)
    tracer = Tracer("secure-bot", "v1", publisher)
    for _ in range(count):
        with tracer.request("answer"):
            pass
    publisher.close(15.0)
    return publisher


@pytest.mark.parametrize("mechanism", SASL_MECHANISMS)
def test_sdk_admin_and_consumer_authenticate_with_each_mechanism(
    kafka_settings: Settings, sasl_listener: SaslListener, tmp_path: Path, mechanism: str
) -> None:
    settings = over_sasl(isolated_settings(kafka_settings, tmp_path), sasl_listener, mechanism)
    assert ensure_topics(settings) == [
        settings.topic(t) for t in ("traces", "traces.dlq", "version-stats")
    ]

    publisher = publish_requests(settings, 3)

    assert (publisher.stats.delivered, publisher.stats.failed) == (3, 0)
    messages = consume_all(settings, settings.topic("traces"), expected=3)
    assert [json.loads(m.value() or b"")["agent"] for m in messages] == ["secure-bot"] * 3


def test_worker_stores_spans_sent_with_credentials_and_none_sent_with_a_wrong_password(
    kafka_settings: Settings,
    sasl_listener: SaslListener,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = over_sasl(
        isolated_settings(kafka_settings, tmp_path), sasl_listener, "SCRAM-SHA-512"
    )
    count = "SELECT count() FROM coalmine.spans"
    with running_worker(settings, tmp_path / "worker.log") as worker:
        assert publish_requests(settings, 5).stats.delivered == 5
        assert wait_for(worker, count, 5) == 5

        wrong = replace(settings, kafka_password="not-the-password")
        errors: list[str | None] = []
        with caplog.at_level(logging.WARNING, logger="coalmine.sdk"):
            refused = publish_requests(
                wrong,
                4,
                on_delivery=lambda _id, error: errors.append(error),
                extra_config={"message.timeout.ms": 5000},
            )
        assert (refused.stats.delivered, refused.stats.failed) == (0, 4)
        assert len(errors) == 4 and all(errors)
        assert "Authentication failed" in caplog.text

        # A span sent afterwards with the right password is stored; the refused ones never are.
        publish_requests(settings, 1)
        assert wait_for(worker, count, 6) == 6
        assert worker.scalar("SELECT uniqExact(event_id) FROM coalmine.spans") == 6
