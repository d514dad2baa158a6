"""How every Kafka client reaches the cluster: the ``COALMINE_KAFKA_*`` security settings as
client configuration.

:func:`client_config` is the base of every confluent-kafka (librdkafka) client's configuration:
the SDK's producer, the admin client that creates topics, the benchmark's producers and
consumers. The Faust worker's aiokafka clients get the same settings through
:func:`streams.runtime.faust_auth.broker_credentials`, which builds on :func:`tls_context` here.
It takes the SDK's settings (the worker's extend them) and imports neither Faust nor
aiokafka: the SDK uses it.
"""

from __future__ import annotations

import ssl
from typing import Any

from streams.errors import CoalmineError
from streams.sdk.settings import SASL_PROTOCOLS, TLS_PROTOCOLS, SdkSettings


def client_config(settings: SdkSettings) -> dict[str, Any]:
    """``bootstrap.servers`` and :func:`security_config`: the base of a librdkafka client's
    configuration, to which callers add their own (``{**client_config(s), "linger.ms": 20}``)."""
    return {"bootstrap.servers": settings.kafka_bootstrap, **security_config(settings)}


def security_config(settings: SdkSettings) -> dict[str, str]:
    """The librdkafka properties of the ``COALMINE_KAFKA_*`` security settings."""
    protocol = settings.kafka_security_protocol
    config = {"security.protocol": protocol.lower()}
    if protocol in SASL_PROTOCOLS:
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism
        config["sasl.username"] = settings.kafka_username
        config["sasl.password"] = settings.kafka_password
    if protocol in TLS_PROTOCOLS:
        # Unset, librdkafka probes the system's CA paths, as Python's default context does.
        optional = {
            "ssl.ca.location": settings.kafka_ca_file,
            "ssl.certificate.location": settings.kafka_cert_file,
            "ssl.key.location": settings.kafka_key_file,
            "ssl.key.password": settings.kafka_key_password or None,
        }
        config.update({key: str(value) for key, value in optional.items() if value is not None})
    return config


def tls_context(settings: SdkSettings) -> ssl.SSLContext:
    """A client TLS context that trusts ``COALMINE_KAFKA_CA_FILE`` (default: the system's
    CAs), checks the broker's host name, and presents the client certificate when one is set.
    Raises :class:`CoalmineError` when a file cannot be used."""
    ca_file = settings.kafka_ca_file
    try:
        context = ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise CoalmineError(f"COALMINE_KAFKA_CA_FILE {ca_file} is not usable: {exc}") from None
    if settings.kafka_cert_file is not None and settings.kafka_key_file is not None:
        try:
            context.load_cert_chain(
                settings.kafka_cert_file,
                settings.kafka_key_file,
                password=settings.kafka_key_password or None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise CoalmineError(
                f"the client certificate {settings.kafka_cert_file} and key "
                f"{settings.kafka_key_file} are not usable: {exc}"
            ) from None
    return context
