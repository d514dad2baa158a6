"""The control topics in ClickHouse: agent versions (``coalmine.agent_versions``) and the
deployment audit trail (``coalmine.deployment_events``), each row stored once.

Like :class:`~streams.storage.clickhouse.SpanWriter`, a writer asks which of a batch's keys
are stored and inserts only the others: (agent, version) for versions, (agent, generation)
for deployment events. The check is exact because each control topic has one partition, so
one consumer, and inserts are synchronous. Row building is pure (unit-tested without
ClickHouse).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Generic, TypeVar

from clickhouse_connect.driver.client import Client

from schemas.deployment import DeploymentState
from schemas.version import AgentVersion, canonical_json
from streams.storage.clickhouse import DATABASE

AGENT_VERSION_COLUMNS: Final = (
    "agent",
    "version",
    "digest",
    "created_at",
    "created_by",
    "description",
    "provider",
    "model",
    "prompt_names",
    "tool_names",
    "bundle",
    "kafka_offset",
)
T = TypeVar("T")
DEPLOYMENT_EVENT_COLUMNS: Final = (
    "agent",
    "generation",
    "time",
    "from_phase",
    "to_phase",
    "cause",
    "stable_version",
    "stable_digest",
    "canary_version",
    "canary_digest",
    "canary_weight",
    "step_index",
    "step_started_at",
    "rollout_id",
    "command_id",
    "issued_by",
    "reason",
    "evidence",
    "gate_cases",
    "gate_quality",
    "gate_error_rate",
    "gate_passed",
    "plan",
    "state",
    "kafka_offset",
)


@dataclass(frozen=True)
class Positioned(Generic[T]):
    """A record's value and its offset on the (one-partition) topic."""

    value: T
    offset: int


@dataclass
class VersionsWrite:
    inserted: int = 0
    repeats: int = 0
    """Records of a stored version with its digest: delivered again, or registered again."""
    conflicts: list[str] = field(default_factory=list)
    """Records naming a stored version with another digest: never stored, each a reason."""


def agent_version_row(version: AgentVersion, offset: int) -> tuple[Any, ...]:
    bundle = version.bundle
    return (
        version.agent,
        version.version,
        version.digest,
        version.created_at,
        version.created_by,
        version.description,
        bundle.model.provider,
        bundle.model.model,
        sorted(bundle.prompts),
        [tool.name for tool in bundle.tools],
        canonical_json(bundle).decode(),
        offset,
    )


def deployment_event_row(
    state: DeploymentState, offset: int, received_at: datetime
) -> tuple[Any, ...]:
    """``received_at`` stands in for ``updated_at`` when the controller left it out."""
    change = state.change
    gate = state.gate
    return (
        state.agent,
        state.generation,
        state.updated_at or received_at,
        change.from_phase.value if change else "",
        state.phase.value,
        change.cause if change else "",
        state.stable_version or "",
        state.stable_digest or "",
        state.canary_version or "",
        state.canary_digest or "",
        state.canary_weight,
        state.step_index,
        state.step_started_at,
        state.rollout_id or "",
        (change.command_id if change else None) or state.last_command_id or "",
        (change.issued_by if change else None) or "",
        change.reason if change else state.last_reason,
        _json(change.evidence if change else {}),
        gate.cases if gate else None,
        gate.quality if gate else None,
        gate.error_rate if gate else None,
        gate.passed if gate else None,
        state.plan.model_dump_json() if state.plan else "",
        state.model_dump_json(),
        offset,
    )


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False)


class AgentVersionWriter:
    """Stores each version once: the first record of a label; a later one with the same
    digest is a repeat, with another digest a conflict (never stored)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def write(self, versions: Sequence[Positioned[AgentVersion]]) -> VersionsWrite:
        """Versions in offset order. Raises the client's error when ClickHouse fails; the
        caller retries the whole batch, which this method makes safe."""
        result = VersionsWrite()
        if not versions:
            return result
        known = self._stored({(p.value.agent, p.value.version) for p in versions})
        rows = []
        for positioned in versions:
            version = positioned.value
            label = (version.agent, version.version)
            digest = known.get(label)
            if digest is None:
                known[label] = version.digest
                rows.append(agent_version_row(version, positioned.offset))
            elif digest == version.digest:
                result.repeats += 1
            else:
                result.conflicts.append(
                    f"{version.key} at offset {positioned.offset} has digest {version.digest}, "
                    f"but the version is {digest}: versions never change, not stored"
                )
        if rows:
            self._client.insert(
                f"{DATABASE}.agent_versions", rows, column_names=list(AGENT_VERSION_COLUMNS)
            )
        result.inserted = len(rows)
        return result

    def _stored(self, labels: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
        # argMin: a copy a rebalance race slipped in is folded towards the first record.
        found = self._client.query(
            f"SELECT agent, version, argMin(digest, kafka_offset) FROM {DATABASE}.agent_versions "
            "WHERE (agent, version) IN {labels:Array(Tuple(String, String))} "
            "GROUP BY agent, version",
            parameters={"labels": sorted(labels)},
        )
        return {(agent, version): digest for agent, version, digest in found.result_rows}


class DeploymentEventWriter:
    """Stores one row per (agent, generation): the first record of each."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def write(self, states: Sequence[Positioned[DeploymentState]], received_at: datetime) -> int:
        """States in offset order; returns the rows inserted. Raises the client's error when
        ClickHouse fails; the caller retries the whole batch, which this method makes safe."""
        if not states:
            return 0
        known = self._stored({(p.value.agent, p.value.generation) for p in states})
        rows = []
        for positioned in states:
            key = (positioned.value.agent, positioned.value.generation)
            if key not in known:
                known.add(key)
                rows.append(deployment_event_row(positioned.value, positioned.offset, received_at))
        if rows:
            self._client.insert(
                f"{DATABASE}.deployment_events", rows, column_names=list(DEPLOYMENT_EVENT_COLUMNS)
            )
        return len(rows)

    def _stored(self, keys: set[tuple[str, int]]) -> set[tuple[str, int]]:
        found = self._client.query(
            f"SELECT DISTINCT agent, generation FROM {DATABASE}.deployment_events "
            "WHERE (agent, generation) IN {keys:Array(Tuple(String, UInt64))}",
            parameters={"keys": sorted(keys)},
        )
        return {(agent, int(generation)) for agent, generation in found.result_rows}
