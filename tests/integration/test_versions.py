"""Agent versions and the deployment audit trail on the real broker and chDB: ``coalmine
versions`` registers, lists, shows and diffs; the worker stores versions and deployment
states once each, whatever is delivered twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from schemas.deployment import DeploymentChange, DeploymentState, Phase
from schemas.topics import DEPLOYMENTS, VERSIONS
from schemas.version import AgentVersion, bundle_digest, canonical_json
from streams.devtools.worker_process import WorkerProcess
from streams.sdk.compacted import read_to_end
from streams.sdk.kafka_security import client_config
from streams.settings import Settings
from streams.topics import TopicSpec, ensure_topics
from streams.versions.catalog import VersionCatalog, VersionConflictError
from streams.versions.load import parse_version_file
from streams.versions.registry import VersionRegistry
from tests.integration.harness import isolated_settings, wait_for, worker
from tests.unit.storage.test_control_rows import canary_state

pytestmark = pytest.mark.integration
__all__ = ["worker"]  # the fixture, imported for the tests below

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "versions"


def coalmine(settings: Settings, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """``coalmine ARGS`` in a child process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *map(str, args)],
        env={**os.environ, **settings.as_env()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def refused(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused command printed."""
    assert result.returncode == 2, result
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("coalmine: error: ")
    return line


def produce(settings: Settings, topic: str, *records: tuple[bytes, bytes | None]) -> None:
    producer = Producer({**client_config(settings), "acks": "all"})
    for key, value in records:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def modified(path: Path, tmp_path: Path, old: str, new: str) -> Path:
    text = path.read_text()
    assert old in text
    changed = tmp_path / path.name
    changed.write_text(text.replace(old, new))
    return changed


def health_counter(worker: WorkerProcess, name: str, expected: int) -> int:
    """The worker's counter ``name`` once it reaches ``expected`` (or after 60 s)."""
    deadline = time.monotonic() + 60
    value: int = worker.health()[name]
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.5)
        value = worker.health()[name]
    return value


def test_versions_are_registered_once_listed_shown_diffed_and_stored(
    worker: WorkerProcess, tmp_path: Path
) -> None:
    settings = worker.settings
    v1_file, v2_file = EXAMPLES / "support-bot-v1.yaml", EXAMPLES / "support-bot-v2.yaml"

    first = coalmine(settings, "versions", "register", v1_file, "--created-by", "alice")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("registered support-bot v1 (sha256:")
    again = coalmine(settings, "versions", "register", v1_file, "--created-by", "bob")
    assert again.returncode == 0, again.stderr
    assert "already registered with this content" in again.stdout
    assert "by alice" in again.stdout

    other = modified(v1_file, tmp_path, "temperature: 0.2", "temperature: 0.3")
    line = refused(coalmine(settings, "versions", "register", other))
    shown = json.loads(coalmine(settings, "versions", "show", "support-bot", "v1", "--json").stdout)
    v1 = AgentVersion.model_validate(shown)
    assert v1.created_by == "alice"
    assert v1.digest in line
    assert line.count("sha256:") == 2
    assert "Versions never change" in line

    assert coalmine(settings, "versions", "register", v2_file).returncode == 0
    listing = coalmine(settings, "versions", "list", "support-bot").stdout.splitlines()
    assert [row.split()[0] for row in listing] == ["VERSION", "v1", "v2"]
    diff = coalmine(settings, "versions", "diff", "support-bot", "v1", "v2").stdout.splitlines()
    assert "    +Answer in the customer's language, in at most two sentences." in diff
    assert '  model: "gpt-4o-mini" → "gpt-4o"' in diff
    assert "  added: issue_refund" in diff
    show = coalmine(settings, "versions", "show", "support-bot", "v2").stdout.splitlines()
    assert "  issue_refund: Refund an order, fully or in part." in show

    assert "has no version 'v7' (latest: v1, v2)" in refused(
        coalmine(settings, "versions", "show", "support-bot", "v7")
    )
    assert "no versions of agent 'nobody'" in refused(
        coalmine(settings, "versions", "list", "nobody")
    )
    assert "cannot read" in refused(
        coalmine(settings, "versions", "register", tmp_path / "none.yaml")
    )

    # One record per version, however often it was registered.
    records = read_to_end(client_config(settings), settings.topic(VERSIONS))
    assert [r.key for r in records] == [b"support-bot/v1", b"support-bot/v2"]

    assert wait_for(worker, "SELECT count() FROM coalmine.agent_versions", 2) == 2
    stored = worker.sql(
        "SELECT version, digest, created_by, provider, model, tool_names, bundle "
        "FROM coalmine.agent_versions ORDER BY version"
    )
    assert stored[0][:6] == ["v1", v1.digest, "alice", "openai", "gpt-4o-mini", ["lookup_order"]]
    assert stored[0][6] == canonical_json(v1.bundle).decode()
    assert stored[1][5] == ["lookup_order", "issue_refund"]

    # Records sent past the registry: v1 again (a repeat), v1 with other content (a
    # conflict: the label keeps its first content everywhere), then v3.
    bundle = v1.bundle.model_copy(update={"extra": {"owner": "mallory"}})
    other_v1 = v1.model_copy(update={"bundle": bundle, "digest": bundle_digest(bundle)})
    v3 = v1.model_copy(update={"version": "v3"})
    produce(
        settings,
        settings.topic(VERSIONS),
        *[(v.key.encode(), v.model_dump_json().encode()) for v in (v1, other_v1, v3)],
    )
    assert wait_for(worker, "SELECT count() FROM coalmine.agent_versions", 3) == 3
    assert health_counter(worker, "control_conflicts", 1) == 1
    assert health_counter(worker, "version_repeats", 1) == 1
    assert worker.sql("SELECT version, digest FROM coalmine.agent_versions ORDER BY version") == [
        ["v1", v1.digest],
        ["v2", stored[1][1]],
        ["v3", v1.digest],
    ]
    still = coalmine(settings, "versions", "show", "support-bot", "v1", "--json")
    assert AgentVersion.model_validate_json(still.stdout).digest == v1.digest
    assert other_v1.digest in still.stderr  # warned about, not shown


def test_a_registration_that_loses_a_race_is_refused_and_the_winner_stays_last(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_settings(kafka_settings, tmp_path)
    ensure_topics(settings)
    registry = VersionRegistry(settings)
    path = EXAMPLES / "support-bot-v1.yaml"
    winner = parse_version_file(path.read_bytes(), str(path)).as_version(datetime.now(UTC), "alice")
    bundle = winner.bundle.model_copy(update={"extra": {"owner": "bob"}})
    loser = winner.model_copy(
        update={"bundle": bundle, "digest": bundle_digest(bundle), "created_by": "bob"}
    )
    # Both checks passed (the label was free); the winner's record landed first.
    registry.publish_and_confirm(winner)
    with pytest.raises(VersionConflictError, match="another registration of other content"):
        registry.publish_and_confirm(loser)

    records = read_to_end(client_config(settings), settings.topic(VERSIONS))
    digests = [AgentVersion.model_validate_json(r.value or b"").digest for r in records]
    # The loser's record is on the topic, between two of the winner's: every reader keeps the
    # first, and compaction, which keeps the last, keeps the winner too.
    assert digests == [winner.digest, loser.digest, winner.digest]
    catalog = VersionCatalog.of(records)
    assert catalog.get("support-bot", "v1") == winner
    assert [c.refused_digest for c in catalog.conflicts] == [loser.digest]


def state(generation: int, phase: Phase, weight: float, cause: str) -> DeploymentState:
    return canary_state().model_copy(
        update={
            "generation": generation,
            "phase": phase,
            "canary_weight": weight,
            "change": DeploymentChange(
                from_phase=Phase.IDLE if generation == 1 else Phase.CANARY,
                cause=cause,
                command_id=f"cmd-{generation}",
                issued_by="alice",
                reason=f"generation {generation}",
                evidence={"step": generation},
            ),
        }
    )


def test_each_deployment_generation_is_one_audit_row_whatever_is_delivered_again(
    worker: WorkerProcess,
) -> None:
    settings = worker.settings
    topic = settings.topic(DEPLOYMENTS)
    generations = [
        state(1, Phase.CANARY, 0.05, "deploy"),
        state(2, Phase.CANARY, 0.25, "step"),
        state(3, Phase.ROLLED_BACK, 0.0, "rollback"),
    ]
    out_of_range = state(2**64, Phase.CANARY, 0.5, "step")  # valid JSON, too big for UInt64

    def record(s: DeploymentState) -> tuple[bytes, bytes]:
        return s.agent.encode(), s.model_dump_json().encode()

    produce(
        settings,
        topic,
        record(generations[0]),
        record(generations[1]),
        record(generations[0]),  # delivered twice
        record(generations[1]),
        (b"support-bot", b"{not a state"),
        record(out_of_range),
        record(generations[2]),
    )
    assert wait_for(worker, "SELECT count() FROM coalmine.deployment_events", 3) == 3
    rows = worker.sql(
        "SELECT generation, from_phase, to_phase, cause, stable_version, canary_version, "
        "canary_weight, step_index, command_id, issued_by, reason, evidence, gate_cases "
        "FROM coalmine.deployment_events ORDER BY generation"
    )
    head = ["generation", "from", "to", "cause", "stable", "canary", "weight", "step", "command"]
    assert [dict(zip(head, row, strict=False)) for row in rows] == [
        dict(zip(head, [1, "idle", "canary", "deploy", "v1", "v2", 0.05, 0, "cmd-1"], strict=True)),
        dict(zip(head, [2, "canary", "canary", "step", "v1", "v2", 0.25, 0, "cmd-2"], strict=True)),
        dict(
            zip(
                head,
                [3, "canary", "rolled_back", "rollback", "v1", "v2", 0.0, 0, "cmd-3"],
                strict=True,
            )
        ),
    ]
    assert [row[9:] for row in rows] == [
        ["alice", f"generation {g}", f'{{"step": {g}}}', 120] for g in (1, 2, 3)
    ]
    assert health_counter(worker, "deployment_repeats", 2) == 2
    assert health_counter(worker, "control_records_skipped", 2) == 2

    # A crash, and the whole topic read again from its start: not one row more.
    worker.kill()
    rewind(settings, topic)
    worker.start()
    produce(settings, topic, record(generations[2]), record(state(4, Phase.IDLE, 0.0, "abort")))
    assert wait_for(worker, "SELECT count() FROM coalmine.deployment_events", 4) == 4
    assert worker.sql(
        "SELECT count(), uniqExact(agent, generation) FROM coalmine.deployment_events"
    ) == [[4, 4]]
    # Every record was read again: five repeats of stored generations and the new one.
    assert health_counter(worker, "deployment_repeats", 6) == 6
    assert worker.health()["deployment_events_stored"] == 1


def rewind(settings: Settings, topic: str, timeout_s: float = 60.0) -> None:
    """Move the worker group's committed offset of ``topic`` (one partition) back to its
    start; the broker allows it once the killed member has left the group."""
    admin = AdminClient(client_config(settings))
    request = [ConsumerGroupTopicPartitions(settings.consumer_group, [TopicPartition(topic, 0, 0)])]
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin.alter_consumer_group_offsets(request)[settings.consumer_group].result()
            return
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_read_to_end_reads_every_partition_and_a_missing_topic_as_empty(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_settings(kafka_settings, tmp_path)
    config = client_config(settings)
    assert read_to_end(config, settings.topic(VERSIONS)) == []
    name = f"{settings.topic_prefix}.three"
    ensure_topics(settings, [TopicSpec(name, 3)])
    assert read_to_end(config, name) == []
    producer = Producer({**config, "acks": "all"})
    for i in range(20):
        producer.produce(name, key=f"k{i}".encode(), value=str(i).encode(), partition=i % 2)
    producer.produce(name, key=b"gone", value=None, partition=0)
    assert producer.flush(30) == 0

    records = read_to_end(config, name)
    assert sorted((r.partition, r.offset) for r in records) == sorted(
        [(0, i) for i in range(11)] + [(1, i) for i in range(10)]
    )
    assert {r.value for r in records} == {str(i).encode() for i in range(20)} | {None}
    in_partition_one = [int(r.value or b"") for r in records if r.partition == 1]
    assert in_partition_one == sorted(in_partition_one)
