"""The registry on ``coalmine.versions``: read it to its end, register a version.

Registering is *check, then produce, then confirm*: the topic is read to its end, the
decision taken (:func:`~streams.versions.catalog.decide`), a new version produced
(``acks=all``, idempotent producer, waited for) and the topic read again up to it.

Two registrations of one label with other content may race: both checks pass, both records
land, in one order, on the topic's one partition. Every reader keeps the first
(:class:`~streams.versions.catalog.VersionCatalog`), so the label names the first content
everywhere; the registration that lost sees another digest when it confirms, produces the
winner's record once more and reports the conflict. Producing the winner again matters
because compaction keeps a key's *last* record: without it, a reader starting after the
losing record's segment was compacted would see only the loser. (A registrant killed between
its produce and its confirmation leaves that repair undone; the race itself needs two people
registering one label within the same second or so.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from schemas.topics import VERSIONS
from schemas.version import AgentVersion
from streams.errors import CoalmineError
from streams.sdk.compacted import read_to_end
from streams.sdk.kafka_security import client_config
from streams.settings import Settings
from streams.topics import TopicSpec, ensure_topics
from streams.versions.catalog import (
    Decision,
    VersionCatalog,
    VersionConflictError,
    conflict_message,
    decide,
)

DEFAULT_TIMEOUT_S = 15.0
# librdkafka would print every failed connection attempt to stderr; a broker that does not
# answer is reported once, by the error raised here.
_quiet_librdkafka = logging.getLogger("coalmine.kafka.versions")
_quiet_librdkafka.setLevel(logging.CRITICAL)


class PublishError(CoalmineError):
    """The broker did not acknowledge a version record."""


@dataclass(frozen=True)
class Registered:
    decision: Decision
    """``NEW``: published now; ``SAME``: it was registered already with this content."""
    version: AgentVersion
    """The version as registered (for ``SAME``: when and by whom it first was)."""


class VersionRegistry:
    def __init__(self, settings: Settings, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._settings = settings
        self._config: dict[str, Any] = {**client_config(settings), "logger": _quiet_librdkafka}
        self._topic = settings.topic(VERSIONS)
        self._timeout_s = timeout_s

    def catalog(self) -> VersionCatalog:
        """Every version on the topic now."""
        return VersionCatalog.of(read_to_end(self._config, self._topic, self._timeout_s))

    def register(self, candidate: AgentVersion) -> Registered:
        """Publish ``candidate`` unless its label is registered; raises
        :class:`VersionConflictError` when the label names other content."""
        ensure_topics(self._settings, [TopicSpec.of(VERSIONS, self._settings)])
        registered = self.catalog().get(candidate.agent, candidate.version)
        decision = decide(registered, candidate)
        if registered is not None:
            if decision is Decision.CONFLICT:
                raise VersionConflictError(conflict_message(registered, candidate.digest))
            return Registered(decision, registered)
        return self.publish_and_confirm(candidate)

    def publish_and_confirm(self, candidate: AgentVersion) -> Registered:
        """Produce ``candidate`` (its label was free when checked) and confirm it is the
        label's first record; if another registration got there first, restore the winner
        as the key's last record and raise :class:`VersionConflictError`."""
        self._produce(candidate)
        winner = self.catalog().get(candidate.agent, candidate.version)
        if winner is None:
            raise PublishError(f"{candidate.key} was acknowledged but not read back")
        if winner.digest != candidate.digest:
            self._produce(winner)
            raise VersionConflictError(
                "another registration of other content got there first: "
                + conflict_message(winner, candidate.digest)
            )
        return Registered(Decision.NEW, candidate)

    def _produce(self, version: AgentVersion) -> None:
        producer = Producer({**self._config, "acks": "all", "enable.idempotence": True})
        failures: list[str] = []

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                failures.append(error.str())

        producer.produce(
            self._topic,
            key=version.key.encode(),
            value=version.model_dump_json().encode(),
            on_delivery=delivered,
        )
        if producer.flush(self._timeout_s) > 0:
            raise PublishError(
                f"{self._topic} did not acknowledge {version.key} within {self._timeout_s:.0f} s"
            )
        if failures:
            raise PublishError(f"{self._topic} refused {version.key}: {failures[0]}")
