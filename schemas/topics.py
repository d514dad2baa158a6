"""The one registry of the topics Coalmine reads and writes: name, key, value, headers,
partitions and cleanup policy, each declared once.

Topic creation (:mod:`streams.topics`), the worker, the SDK, the command line, the
benchmarks and the tests take names and headers from here. This module imports only the
standard library, and value models are named by import path and loaded on demand: the SDK
imports the registry, and the window stats model needs numpy, which an agent does not install.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, Protocol

from schemas.framing import MAX_MESSAGE_BYTES, MAX_SPANS_PER_MESSAGE

if TYPE_CHECKING:
    from pydantic import BaseModel


class TopicSettings(Protocol):
    """What a topic's full name and layout depend on (:class:`streams.settings.Settings`)."""

    @property
    def topic_prefix(self) -> str: ...

    @property
    def traces_partitions(self) -> int: ...


@dataclass(frozen=True)
class Header:
    name: str
    doc: str


@dataclass(frozen=True)
class ValueModel:
    """A pydantic model published on a topic, as ``module:Class``."""

    path: str
    schema: str
    """Its JSON Schema file: ``schemas/json/<schema>.schema.json``."""

    @property
    def class_name(self) -> str:
        return self.path.partition(":")[2]

    @property
    def schema_file(self) -> str:
        return f"schemas/json/{self.schema}.schema.json"

    def load(self) -> type[BaseModel]:
        module, _, name = self.path.partition(":")
        model: type[BaseModel] = getattr(importlib.import_module(module), name)
        return model


def _traces_partitions(settings: TopicSettings) -> int:
    return settings.traces_partitions


def _one_partition(_: TopicSettings) -> int:
    """Control topics: one ordered log of every agent's deployment history, one owner."""
    return 1


@dataclass(frozen=True)
class Topic:
    name: str
    """Relative to ``COALMINE_TOPIC_PREFIX``: ``traces`` is ``coalmine.traces``."""
    key: str
    value: ValueModel | None
    """None: bytes as they arrived, not necessarily valid."""
    value_doc: str
    headers: tuple[Header, ...] = ()
    cleanup_policy: Literal["delete", "compact"] = "delete"
    """``compact`` keeps the latest record per key for good: a topic holding state."""
    partitions: Callable[[TopicSettings], int] = _traces_partitions
    append_time: bool = False
    """Records carry the broker's append time as their timestamp (not the producer's):
    readers compare it with deadlines, and a producer cannot backdate it."""

    def full_name(self, prefix: str) -> str:
        return f"{prefix}.{self.name}"

    @property
    def config(self) -> dict[str, str]:
        """Topic-level configuration applied when the topic is created."""
        config: dict[str, str] = {"cleanup.policy": self.cleanup_policy}
        if self.append_time:
            config["message.timestamp.type"] = "LogAppendTime"
        return config


LATE_HEADER: Final = "coalmine.window.late"
DLQ_REASON: Final = "coalmine.dlq.reason"
DLQ_SOURCE_TOPIC: Final = "coalmine.dlq.source_topic"
DLQ_SOURCE_PARTITION: Final = "coalmine.dlq.source_partition"
DLQ_SOURCE_OFFSET: Final = "coalmine.dlq.source_offset"
DLQ_SOURCE_INDEX: Final = "coalmine.dlq.source_index"
DLQ_TRUNCATED: Final = "coalmine.dlq.truncated"
DLQ_ORIGINAL_KEY_BYTES: Final = "coalmine.dlq.original_key_bytes"
DLQ_ORIGINAL_VALUE_BYTES: Final = "coalmine.dlq.original_value_bytes"

TRACES: Final = Topic(
    "traces",
    key="`trace_id` (of a batch: its first span's)",
    value=ValueModel("schemas.trace:TraceEvent", "trace-event"),
    value_doc=f"one span (a JSON object), or a batch of up to {MAX_SPANS_PER_MESSAGE} spans, one "
    f"JSON object per line (newline-delimited, {MAX_MESSAGE_BYTES:,} bytes at most; the rule "
    "in `schemas/framing.py`)",
)
TRACES_DLQ: Final = Topic(
    "traces.dlq",
    key="the original key",
    value=None,
    value_doc="the original value, as it arrived (its original headers kept too); for one span "
    "of a batch, that span's line",
    headers=(
        Header(DLQ_REASON, "why it was refused"),
        Header(DLQ_SOURCE_TOPIC, "the topic it came from"),
        Header(DLQ_SOURCE_PARTITION, "its partition there"),
        Header(DLQ_SOURCE_OFFSET, "its offset there"),
        Header(
            DLQ_SOURCE_INDEX,
            "on one span of a batch (the value is that span alone): its index in the message",
        ),
        Header(DLQ_TRUNCATED, "on a record cut to fit: what was cut, `value,headers,key`"),
        Header(DLQ_ORIGINAL_KEY_BYTES, "on a cut record: size before the cut"),
        Header(DLQ_ORIGINAL_VALUE_BYTES, "on a cut record: size before the cut"),
    ),
)
VERSION_STATS: Final = Topic(
    "version-stats",
    key="`agent`",
    value=ValueModel("schemas.window_stats:WindowStats", "window-stats"),
    value_doc="one partial window",
    headers=(Header(LATE_HEADER, "`1` on a correction row, else `0`"),),
)

VERSIONS: Final = Topic(
    "versions",
    key="`agent/version`",
    value=ValueModel("schemas.version:AgentVersion", "agent-version"),
    value_doc="one immutable agent version",
    cleanup_policy="compact",
    partitions=_one_partition,
)
COMMANDS: Final = Topic(
    "commands",
    key="`agent`",
    value=ValueModel("schemas.command:Command", "command"),
    value_doc="an operator's (or CI's) request to the controller",
    partitions=_one_partition,
)
ROLLBACKS: Final = Topic(
    "rollbacks",
    key="`agent`",
    value=ValueModel("schemas.rollback:RollbackCommand", "rollback-command"),
    value_doc="take a canary out of traffic (from the detector or anyone)",
    partitions=_one_partition,
)
COMMAND_OUTCOMES: Final = Topic(
    "command-outcomes",
    key="`agent`",
    value=ValueModel("schemas.command:CommandOutcome", "command-outcome"),
    value_doc="the controller's answer to a command: applied (with the state) or rejected",
    partitions=_one_partition,
)
DEPLOYMENTS: Final = Topic(
    "deployments",
    key="`agent`",
    value=ValueModel("schemas.deployment:DeploymentState", "deployment-state"),
    value_doc="who gets an agent's traffic now; the controller is the single writer",
    cleanup_policy="compact",
    partitions=_one_partition,
)
JUDGEMENTS: Final = Topic(
    "judgements",
    key="`agent`",
    value=ValueModel("schemas.judgement:Judgement", "judgement"),
    value_doc="the judge's verdict and evidence after each compared window of a canary",
    partitions=_one_partition,
)
ALERTS: Final = Topic(
    "alerts",
    key="`agent`",
    value=ValueModel("schemas.alert:Alert", "alert"),
    value_doc="a transition a person should know about (regression, drift, cost spike, …)",
    partitions=_one_partition,
)
APPROVAL_REQUESTS: Final = Topic(
    "approval-requests",
    key="request `id`",
    value=ValueModel("schemas.approval:ApprovalRequest", "approval-request"),
    value_doc="a tool call waiting for a person's approval (its version's policy asks)",
    partitions=_one_partition,
    append_time=True,
)
APPROVAL_DECISIONS: Final = Topic(
    "approval-decisions",
    key="`request_id`",
    value=ValueModel("schemas.approval:ApprovalDecision", "approval-decision"),
    value_doc="approve, deny, or the asking agent's expire; per request the first one "
    "appended by its deadline counts (an expire always does), the rest are refused",
    partitions=_one_partition,
    append_time=True,
)

TOPICS: Final = (
    TRACES,
    TRACES_DLQ,
    VERSION_STATS,
    JUDGEMENTS,
    ALERTS,
    VERSIONS,
    COMMANDS,
    ROLLBACKS,
    COMMAND_OUTCOMES,
    DEPLOYMENTS,
    APPROVAL_REQUESTS,
    APPROVAL_DECISIONS,
)
"""Every topic, in the order the data flows."""


def topic_reference(prefix: str) -> str:
    """A markdown table of every topic; a test keeps the README's table equal to it."""
    rows = ["| topic | key | value | headers | config |", "|---|---|---|---|---|"]
    for topic in TOPICS:
        value = topic.value_doc
        if topic.value is not None:
            value = f"[{topic.value.class_name}]({topic.value.schema_file}): {value}"
        headers = ", ".join(f"`{h.name}` ({h.doc})" for h in topic.headers) or "none"
        config = ", ".join(f"`{k}={v}`" for k, v in topic.config.items())
        name = topic.full_name(prefix)
        rows.append(f"| `{name}` | {topic.key} | {value} | {headers} | {config} |")
    return "\n".join(rows)
