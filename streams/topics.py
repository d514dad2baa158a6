"""The topics Coalmine owns (:mod:`schemas.topics`), created up front with their configured
partition counts and cleanup policies.

Faust only declares its internal topics, and a topic auto-created by a producer gets the
broker's default partition count and configuration; so the worker creates its topics before
it subscribes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from schemas.topics import TOPICS, Topic
from streams.errors import CoalmineError
from streams.sdk.kafka_security import client_config
from streams.settings import Settings

log = logging.getLogger(__name__)

ADMIN_TIMEOUT_S = 15.0
# librdkafka would print every failed connection attempt to stderr; a broker that does not
# answer is reported once, by ensure_topics' own error.
_quiet_librdkafka = logging.getLogger("coalmine.kafka.admin")
_quiet_librdkafka.setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, topic: Topic, settings: Settings) -> TopicSpec:
        return cls(settings.topic(topic), topic.partitions(settings), tuple(topic.config.items()))


def owned_topics(settings: Settings) -> list[TopicSpec]:
    """Every topic the pipeline reads or writes, with how it is laid out."""
    return [TopicSpec.of(topic, settings) for topic in TOPICS]


def ensure_topics(settings: Settings, specs: list[TopicSpec] | None = None) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    config: dict[str, Any] = {**client_config(settings), "logger": _quiet_librdkafka}
    admin = AdminClient(config)
    wanted = specs if specs is not None else owned_topics(settings)
    try:
        existing = set(admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics)
    except KafkaException as exc:
        raise CoalmineError(
            f"Kafka at {settings.kafka_bootstrap} does not answer ({exc.args[0].str()}); "
            "start it with `coalmine dev up` or set COALMINE_KAFKA_BOOTSTRAP"
        ) from None
    missing = [
        NewTopic(
            spec.name,
            num_partitions=spec.partitions,
            replication_factor=settings.replication_factor,
            config=dict(spec.config),
        )
        for spec in wanted
        if spec.name not in existing
    ]
    if not missing:
        return []
    for name, future in admin.create_topics(missing, request_timeout=ADMIN_TIMEOUT_S).items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise CoalmineError(f"cannot create topic {name}: {exc.args[0].str()}") from None
        log.info("created topic %s", name)
    return [topic.topic for topic in missing]
