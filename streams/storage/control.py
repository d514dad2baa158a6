"""The control topics in ClickHouse: agent versions (``coalmine.agent_versions``), the
deployment audit trail (``coalmine.deployment_events``) and approval requests and decisions
(``coalmine.approvals``), each row stored once.

Like :class:`~streams.storage.clickhouse.SpanWriter`, a writer asks which of a batch's keys
are stored and inserts only the others: (agent, version) for versions, (agent, generation)
for deployment events. The check is exact because each control topic has one partition, so
one consumer, and inserts are synchronous. Row building is pure (unit-tested without
ClickHouse).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Generic, TypeVar

from clickhouse_connect.driver.client import Client

from schemas.approval import ApprovalDecision, ApprovalRequest
from schemas.deployment import DeploymentState
from schemas.version import AgentVersion, canonical_json
from streams.storage.clickhouse import DATABASE, isolate_refused_rows

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
APPROVAL_COLUMNS: Final = (
    "request_id",
    "event",
    "event_id",
    "agent",
    "version",
    "environment",
    "tenant",
    "tool",
    "arguments",
    "asks_because",
    "on_timeout",
    "deadline",
    "trace_id",
    "span_id",
    "actor",
    "reason",
    "time",
    "appended_at",
    "kafka_offset",
)


@dataclass(frozen=True)
class Appended:
    """A record of an approval topic with the broker's append time."""

    event: ApprovalRequest | ApprovalDecision
    appended_at: datetime

    @property
    def is_request(self) -> bool:
        return isinstance(self.event, ApprovalRequest)


@dataclass(frozen=True)
class Positioned(Generic[T]):
    """A record's value and its offset on the (one-partition) topic."""

    value: T
    offset: int


@dataclass
class ControlWrite:
    """What storing a batch of control records did."""

    inserted: int = 0
    repeats: int = 0
    """Records of a stored row with the same content: delivered again, registered again."""
    conflicts: list[str] = field(default_factory=list)
    """Records naming a stored row (a label, a generation) with other content: never
    stored, each a reason. The row keeps the first record's content."""
    refused: list[str] = field(default_factory=list)
    """Records whose values ClickHouse refused (a number out of a column's range): never
    stored, each a reason."""
    stored: list[Any] = field(default_factory=list)
    """The values of the rows inserted, in offset order."""


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


def approval_row(record: Appended, offset: int) -> tuple[Any, ...]:
    event = record.event
    if isinstance(event, ApprovalRequest):
        return (
            event.id,
            "request",
            event.id,
            event.agent,
            event.version,
            event.environment,
            event.tenant or "",
            event.tool,
            _json(event.arguments),
            event.asks_because,
            event.on_timeout.value,
            event.deadline,
            event.trace_id,
            event.span_id,
            event.requested_by,
            "",
            event.time,
            record.appended_at,
            offset,
        )
    return (
        event.request_id,
        event.decision.value,
        event.id,
        event.agent,
        *("",) * 7,
        None,
        "",
        "",
        event.decided_by,
        event.reason,
        event.time,
        record.appended_at,
        offset,
    )


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, allow_nan=False)


class AgentVersionWriter:
    """Stores each version once: the first record of a label; a later one with the same
    digest is a repeat, with another digest a conflict (never stored)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def write(self, versions: Sequence[Positioned[AgentVersion]]) -> ControlWrite:
        """Versions in offset order. Raises the client's error when ClickHouse fails; the
        caller retries the whole batch, which this method makes safe."""
        if not versions:
            return ControlWrite()
        stored = self._stored({(p.value.agent, p.value.version) for p in versions})
        return write_first_of_each(
            self._client,
            "agent_versions",
            columns=AGENT_VERSION_COLUMNS,
            records=[((p.value.agent, p.value.version), p.value.digest, p) for p in versions],
            stored=stored,
            row_of=lambda p: agent_version_row(p.value, p.offset),
        )

    def _stored(self, labels: set[tuple[str, str]]) -> dict[Hashable, str]:
        # argMin: a copy a rebalance race slipped in is folded towards the first record.
        found = self._client.query(
            f"SELECT agent, version, argMin(digest, kafka_offset) FROM {DATABASE}.agent_versions "
            "WHERE (agent, version) IN {labels:Array(Tuple(String, String))} "
            "GROUP BY agent, version",
            parameters={"labels": sorted(labels)},
        )
        return {(agent, version): digest for agent, version, digest in found.result_rows}


class DeploymentEventWriter:
    """Stores one row per (agent, generation): the first record of each. Another state for a
    stored generation (two controllers at once?) is a conflict, reported and not stored."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def write(
        self, states: Sequence[Positioned[DeploymentState]], received_at: datetime
    ) -> ControlWrite:
        """States in offset order. Raises the client's error when ClickHouse fails; the caller
        retries the whole batch, which this method makes safe."""
        if not states:
            return ControlWrite()
        stored = self._stored({(p.value.agent, p.value.generation) for p in states})
        return write_first_of_each(
            self._client,
            "deployment_events",
            columns=DEPLOYMENT_EVENT_COLUMNS,
            records=[
                ((p.value.agent, p.value.generation), p.value.model_dump_json(), p) for p in states
            ],
            stored=stored,
            row_of=lambda p: deployment_event_row(p.value, p.offset, received_at),
        )

    def _stored(self, keys: set[tuple[str, int]]) -> dict[Hashable, str]:
        found = self._client.query(
            f"SELECT agent, generation, argMin(state, kafka_offset) "
            f"FROM {DATABASE}.deployment_events "
            "WHERE (agent, generation) IN {keys:Array(Tuple(String, UInt64))} "
            "GROUP BY agent, generation",
            parameters={"keys": sorted(keys)},
        )
        return {(agent, int(gen)): state for agent, gen, state in found.result_rows}


class ApprovalWriter:
    """Stores each record of the approval topics once, by its topic and offset (a decision
    sent twice is two records: both stored, the views apply the rule)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def write(self, records: Sequence[Positioned[Appended]]) -> ControlWrite:
        """Records in offset order; raises the client's error when ClickHouse fails."""
        if not records:
            return ControlWrite()
        found = self._client.query(
            f"SELECT event = 'request', kafka_offset, any(event_id) FROM {DATABASE}.approvals "
            "WHERE (event = 'request', kafka_offset) IN {keys:Array(Tuple(Bool, UInt64))} "
            "GROUP BY event = 'request', kafka_offset",
            parameters={"keys": sorted({(p.value.is_request, p.offset) for p in records})},
        )
        stored: dict[Hashable, str] = {
            (bool(is_request), int(offset)): event_id
            for is_request, offset, event_id in found.result_rows
        }
        return write_first_of_each(
            self._client,
            "approvals",
            columns=APPROVAL_COLUMNS,
            records=[((p.value.is_request, p.offset), p.value.event.id, p) for p in records],
            stored=stored,
            row_of=lambda p: approval_row(p.value, p.offset),
        )


def write_first_of_each(
    client: Client,
    table: str,
    *,
    columns: Sequence[str],
    records: Sequence[tuple[Hashable, str, Positioned[Any]]],
    stored: dict[Hashable, str],
    row_of: Callable[[Positioned[Any]], tuple[Any, ...]],
) -> ControlWrite:
    """Insert the first record of each key not in ``stored`` (key → content); a later record
    of a key is a repeat when its content is the same, else a conflict."""
    result = ControlWrite()
    new: list[Positioned[Any]] = []
    for key, content, positioned in records:
        known = stored.get(key)
        if known is None:
            stored[key] = content
            new.append(positioned)
        elif known == content:
            result.repeats += 1
        else:
            result.conflicts.append(
                f"{table} {key} at offset {positioned.offset} has other content than the "
                "stored row: not stored (the first record of a key is kept)"
            )

    def insert(chunk: Sequence[tuple[Any, ...]]) -> None:
        client.insert(f"{DATABASE}.{table}", chunk, column_names=list(columns))

    # The offset (the last column) names a row; rows ClickHouse refuses are left out.
    rows = [row_of(positioned) for positioned in new]
    refused = isolate_refused_rows(rows, insert, lambda row: row[-1], f"{table} row")
    result.refused = [f"offset {offset}: {reason}" for offset, reason in refused.items()]
    result.stored = [p.value for p in new if p.offset not in refused]
    result.inserted = len(result.stored)
    return result
