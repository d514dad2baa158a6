"""The ``COALMINE_KAFKA_*`` security settings against the session broker's SASL listener:
SDK, admin, worker (Faust/aiokafka) and a confluent-kafka consumer all authenticate, and a
wrong password gets nothing in."""

from __future__ import annotations

import json
import logging
import ssl
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from schemas.topics import TOPICS, TRACES
from streams.devtools.localkafka import SaslListener
from streams.errors import CoalmineError
from streams.sdk import KafkaPublisher, Tracer
from streams.sdk.kafka_security import tls_context
from streams.settings import SASL_MECHANISMS, Settings
from streams.topics import ensure_topics
from tests.integration.harness import consume_spans, isolated_settings, running_worker, wait_for

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
    assert ensure_topics(settings) == [settings.topic(t) for t in TOPICS]

    publisher = publish_requests(settings, 3)

    assert (publisher.stats.delivered, publisher.stats.failed) == (3, 0)
    spans = consume_spans(settings, settings.topic(TRACES), expected=3)
    assert [json.loads(span)["agent"] for span in spans] == ["secure-bot"] * 3


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
        # Window rows go to ClickHouse only after the worker's producer has sent them to
        # Kafka: that client authenticates too.
        assert wait_for(worker, "SELECT sum(requests) FROM coalmine.version_stats", 6) == 6


def _self_signed(folder: Path, name: str, key_password: str | None = None) -> tuple[Path, Path]:
    """A certificate and its key made by openssl (key encrypted with ``key_password``)."""
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    protection = ["-passout", f"pass:{key_password}"] if key_password else ["-nodes"]
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-days", "1", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert),
         *protection],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_tls_context_trusts_the_ca_file_and_presents_the_client_certificate(
    tmp_path: Path,
) -> None:
    ca, _ = _self_signed(tmp_path, "coalmine-test-ca")
    cert, key = _self_signed(tmp_path, "client", key_password="key-secret")
    settings = Settings(
        kafka_security_protocol="SSL",
        kafka_ca_file=ca,
        kafka_cert_file=cert,
        kafka_key_file=key,
        kafka_key_password="key-secret",
    )

    context = tls_context(settings)

    (ca_cert,) = context.get_ca_certs()
    assert (("commonName", "coalmine-test-ca"),) in ca_cert["subject"]
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(CoalmineError, match="are not usable") as refused:
        tls_context(replace(settings, kafka_key_password="wrong"))
    assert "\n" not in str(refused.value) and "key-secret" not in str(refused.value)
    (tmp_path / "garbage.pem").write_text("not a certificate")
    with pytest.raises(CoalmineError, match=r"COALMINE_KAFKA_CA_FILE .* is not usable"):
        tls_context(replace(settings, kafka_ca_file=tmp_path / "garbage.pem"))
