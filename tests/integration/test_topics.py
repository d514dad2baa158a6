"""Topic creation on the real broker: every topic of the registry with its partitions and
cleanup policy, and a compacted topic compacted."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource  # not re-exported explicitly

from schemas.topics import DEPLOYMENTS, TOPICS, TRACES
from streams.settings import Settings
from streams.topics import ADMIN_TIMEOUT_S, ensure_topics
from tests.integration.harness import isolated_settings

pytestmark = pytest.mark.integration


def layout(admin: AdminClient, names: list[str]) -> dict[str, tuple[int, str]]:
    """Partition count and cleanup policy of each topic, as the broker reports them."""
    described = admin.list_topics(timeout=ADMIN_TIMEOUT_S).topics
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    futures = admin.describe_configs(resources, request_timeout=ADMIN_TIMEOUT_S)
    return {
        resource.name: (
            len(described[resource.name].partitions),
            future.result()["cleanup.policy"].value,
        )
        for resource, future in futures.items()
    }


def test_every_topic_is_created_as_the_registry_declares_it(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    settings = replace(isolated_settings(kafka_settings, tmp_path), traces_partitions=3)
    names = [settings.topic(topic) for topic in TOPICS]

    assert ensure_topics(settings) == names
    assert ensure_topics(settings) == []  # already there: nothing to create

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    assert layout(admin, names) == {
        settings.topic(topic): (topic.partitions(settings), topic.cleanup_policy)
        for topic in TOPICS
    }
    assert layout(admin, [settings.topic(TRACES), settings.topic(DEPLOYMENTS)]) == {
        settings.topic(TRACES): (3, "delete"),
        settings.topic(DEPLOYMENTS): (1, "compact"),
    }
