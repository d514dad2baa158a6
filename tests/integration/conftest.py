"""Integration fixtures: one real single-node Kafka broker per test session.

The broker runs exactly as ``coalmine dev up`` runs it, but in a temporary home on a free port,
so a developer's own broker and data are never touched. Jars come from the user's cache
(``coalmine dev fetch``, run by ``make test``), so the suite does not download them again.
If the broker cannot start, every test that needs it errors: a missing broker is never a skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from streams.devtools import localkafka
from streams.errors import CoalmineError
from streams.settings import Settings


@pytest.fixture(scope="session")
def sasl_listener() -> localkafka.SaslListener:
    """The session broker's second listener, SASL_PLAINTEXT, for tests of client security."""
    return localkafka.SaslListener(
        port=localkafka.free_loopback_port(), users=(("coalmine", "coalmine-secret"),)
    )


@pytest.fixture(scope="session")
def kafka_settings(
    tmp_path_factory: pytest.TempPathFactory, sasl_listener: localkafka.SaslListener
) -> Iterator[Settings]:
    """Settings of this session: a tmp home whose broker answers at ``kafka_bootstrap``
    (plaintext) and on ``sasl_listener``."""
    user = Settings.from_env()
    home = tmp_path_factory.mktemp("coalmine-home")
    settings = replace(
        user,
        home=home,
        kafka_bootstrap=f"127.0.0.1:{localkafka.free_loopback_port((sasl_listener.port,))}",
        kafka_jars_dir=localkafka.jars_dir(user),
        clickhouse_url=f"chdb://{home / 'chdb'}"
        if user.is_embedded_clickhouse
        else user.clickhouse_url,
    )
    failure = None
    try:
        # LocalKafka stops the broker when the session ends, also after failures; a start
        # that fails half-way stops what it began before raising.
        with localkafka.LocalKafka(settings, sasl=sasl_listener):
            yield settings
    except CoalmineError as exc:
        failure = f"the local Kafka broker for the tests failed: {exc}"
    if failure is not None:  # outside the except block, so the report is just the reason
        pytest.fail(failure, pytrace=False)


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_settings: Settings) -> str:
    """``127.0.0.1:<port>`` of the session's broker."""
    return kafka_settings.kafka_bootstrap


@pytest.fixture(scope="module")
def own_broker(
    kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """A broker of the test module's own, so a test can stop and start it without hurting
    others."""
    home = tmp_path_factory.mktemp("own-broker")
    port = localkafka.free_loopback_port()
    settings = replace(kafka_settings, home=home, kafka_bootstrap=f"127.0.0.1:{port}")
    with localkafka.LocalKafka(settings):
        yield settings
