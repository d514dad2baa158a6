"""The security settings as librdkafka properties and as Faust's broker credentials."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from streams.runtime.faust_auth import broker_credentials
from streams.sdk.kafka_security import client_config, security_config
from streams.settings import SASL_MECHANISMS, Settings

SASL: dict[str, Any] = {"kafka_username": "svc", "kafka_password": "s3cret"}
TLS_FILES = {
    "kafka_ca_file": Path("/etc/kafka/ca.pem"),
    "kafka_cert_file": Path("/etc/kafka/client.pem"),
    "kafka_key_file": Path("/etc/kafka/client.key"),
}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, {"security.protocol": "plaintext"}),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", **SASL},
            {
                "security.protocol": "sasl_plaintext",
                "sasl.mechanism": "PLAIN",
                "sasl.username": "svc",
                "sasl.password": "s3cret",
            },
        ),
        (
            {
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_mechanism": "SCRAM-SHA-512",
                "kafka_ca_file": Path("/etc/kafka/ca.pem"),
                **SASL,
            },
            {
                "security.protocol": "sasl_ssl",
                "sasl.mechanism": "SCRAM-SHA-512",
                "sasl.username": "svc",
                "sasl.password": "s3cret",
                "ssl.ca.location": "/etc/kafka/ca.pem",
            },
        ),
        ({"kafka_security_protocol": "SSL"}, {"security.protocol": "ssl"}),
        (
            {"kafka_security_protocol": "SSL", **TLS_FILES, "kafka_key_password": "kp"},
            {
                "security.protocol": "ssl",
                "ssl.ca.location": "/etc/kafka/ca.pem",
                "ssl.certificate.location": "/etc/kafka/client.pem",
                "ssl.key.location": "/etc/kafka/client.key",
                "ssl.key.password": "kp",
            },
        ),
    ],
    ids=["plaintext", "sasl-plain", "sasl-ssl-scram", "ssl-system-cas", "ssl-client-cert"],
)
def test_librdkafka_properties(values: dict[str, Any], expected: dict[str, str]) -> None:
    settings = Settings(kafka_bootstrap="k1:9093,k2:9093", **values)
    assert security_config(settings) == expected
    assert client_config(settings) == {"bootstrap.servers": "k1:9093,k2:9093", **expected}


def a_context(settings: Settings) -> ssl.SSLContext:
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def no_tls(settings: Settings) -> ssl.SSLContext:
    raise AssertionError("a TLS context was built for a protocol without TLS")


def test_plaintext_means_no_credentials() -> None:
    assert broker_credentials(Settings(), no_tls) is None
    assert credentials_to_aiokafka_auth(None) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("mechanism", SASL_MECHANISMS)
def test_sasl_reaches_aiokafka_with_mechanism_and_login(mechanism: str) -> None:
    settings = Settings(
        kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism=mechanism, **SASL
    )
    auth = credentials_to_aiokafka_auth(broker_credentials(settings, no_tls))
    assert auth == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "svc",
        "sasl_plain_password": "s3cret",
        "ssl_context": None,
    }


def test_sasl_ssl_carries_the_tls_context() -> None:
    settings = Settings(kafka_security_protocol="SASL_SSL", **SASL)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    auth = credentials_to_aiokafka_auth(broker_credentials(settings, lambda _: context))
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["ssl_context"] is context


def test_ssl_alone_is_tls_without_sasl() -> None:
    settings = Settings(kafka_security_protocol="SSL")
    auth = credentials_to_aiokafka_auth(broker_credentials(settings, a_context))
    assert auth["security_protocol"] == "SSL"
    assert isinstance(auth["ssl_context"], ssl.SSLContext)
    assert "sasl_mechanism" not in auth


def test_credentials_do_not_show_the_password() -> None:
    settings = Settings(kafka_security_protocol="SASL_PLAINTEXT", **SASL)
    assert "s3cret" not in repr(broker_credentials(settings, no_tls))
