"""The registry of topics: every value model loads and has its JSON Schema file, names and
headers are unique and fit Kafka's limits, and topic creation and the README follow it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pydantic import BaseModel

from schemas.export import PUBLISHED
from schemas.topics import TOPICS, TRACES, VERSIONS, topic_reference
from streams.settings import Settings
from streams.topics import TopicSpec, owned_topics

ROOT = Path(__file__).resolve().parents[2]
KAFKA_MAX_TOPIC_CHARS = 249


def test_every_value_model_loads_and_has_its_published_schema() -> None:
    for topic in TOPICS:
        if topic.value is None:
            continue
        model = topic.value.load()
        assert issubclass(model, BaseModel)
        assert model.__name__ == topic.value.class_name
        assert PUBLISHED[topic.value.schema] is model
        assert (ROOT / topic.value.schema_file).is_file()


def test_names_and_headers_are_unique_and_fit_kafka() -> None:
    assert len({t.name for t in TOPICS}) == len(TOPICS)
    longest_prefix = Settings.from_env({"COALMINE_TOPIC_PREFIX": "p" * 200})
    for topic in TOPICS:
        assert len(longest_prefix.topic(topic)) <= KAFKA_MAX_TOPIC_CHARS
        names = [h.name for h in topic.headers]
        assert len(set(names)) == len(names)
        assert all(name.startswith("coalmine.") for name in names)


def test_topic_creation_takes_partitions_and_config_from_the_registry() -> None:
    # The README says data topics have COALMINE_TRACES_PARTITIONS partitions, control one.
    # Approval topics carry the broker's append time: decisions are judged by it.
    append_time = {"cleanup.policy": "delete", "message.timestamp.type": "LogAppendTime"}
    for partitions in (1, 7):
        settings = replace(Settings(), topic_prefix="x", traces_partitions=partitions)
        layout = {
            spec.name: (spec.partitions, dict(spec.config)) for spec in owned_topics(settings)
        }
        assert layout == {
            "x.traces": (partitions, {"cleanup.policy": "delete"}),
            "x.traces.dlq": (partitions, {"cleanup.policy": "delete"}),
            "x.version-stats": (partitions, {"cleanup.policy": "delete"}),
            "x.judgements": (1, {"cleanup.policy": "delete"}),
            "x.alerts": (1, {"cleanup.policy": "delete"}),
            "x.versions": (1, {"cleanup.policy": "compact"}),
            "x.commands": (1, {"cleanup.policy": "delete"}),
            "x.rollbacks": (1, {"cleanup.policy": "delete"}),
            "x.command-outcomes": (1, {"cleanup.policy": "delete"}),
            "x.deployments": (1, {"cleanup.policy": "compact"}),
            "x.approval-requests": (1, append_time),
            "x.approval-decisions": (1, append_time),
        }


def test_a_compacted_topic_is_created_compacted() -> None:
    spec = TopicSpec.of(VERSIONS, replace(Settings(), traces_partitions=3))
    assert (spec.name, spec.partitions) == ("coalmine.versions", 1)
    assert dict(spec.config) == {"cleanup.policy": "compact"}


def test_the_readme_topic_table_is_the_registry() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = topic_reference(Settings().topic_prefix)
    assert table in readme, f"README's topic table is stale; it should read:\n{table}"
    assert f"`{Settings().topic(TRACES)}`" in table
