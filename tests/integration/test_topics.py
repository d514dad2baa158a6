"""Topic creation on the real broker: every topic of the registry with its partitions and
cleanup policy, and a compacted topic compacted."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource  # not re-exported explicitly

from schemas.topics import TOPICS, Topic
from streams.settings import Settings
from streams.topics import ADMIN_TIMEOUT_S, TopicSpec, ensure_topics
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
    assert layout(admin, names) == {name: (3, "delete") for name in names}


def test_a_compacted_topic_is_created_compacted(kafka_settings: Settings, tmp_path: Path) -> None:
    settings = isolated_settings(kafka_settings, tmp_path)
    state = Topic("deployments", "`agent`", value=None, value_doc="state", cleanup_policy="compact")
    spec = TopicSpec.of(state, settings)

    assert ensure_topics(settings, [spec]) == [spec.name]

    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    assert layout(admin, [spec.name]) == {spec.name: (settings.traces_partitions, "compact")}
