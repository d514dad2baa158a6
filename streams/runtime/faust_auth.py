"""The ``COALMINE_KAFKA_*`` security settings as Faust's ``broker_credentials``.

Faust hands them to every aiokafka client it makes (consumer, producer, the admin calls that
declare topics) through ``credentials_to_aiokafka_auth``: ``SASLCredentials`` becomes
``security_protocol`` SASL_PLAINTEXT (SASL_SSL once it has a TLS context),
``sasl_mechanism``, ``sasl_plain_username`` and ``sasl_plain_password`` (the names aiokafka
uses for every mechanism, SCRAM included); ``SSLCredentials`` becomes SSL with its context.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import faust

from streams.sdk.kafka_security import tls_context
from streams.settings import SASL_PROTOCOLS, TLS_PROTOCOLS, Settings


def broker_credentials(
    settings: Settings, make_tls_context: Callable[[Settings], ssl.SSLContext] = tls_context
) -> Any:
    """Faust's credentials for ``settings``, or None for PLAINTEXT. ``make_tls_context`` is
    called only for the TLS protocols."""
    protocol = settings.kafka_security_protocol
    context = make_tls_context(settings) if protocol in TLS_PROTOCOLS else None
    if protocol in SASL_PROTOCOLS:
        return faust.SASLCredentials(
            username=settings.kafka_username,
            password=settings.kafka_password,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None
