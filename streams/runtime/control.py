"""The control topics into ClickHouse: ``coalmine.versions`` → ``coalmine.agent_versions``,
``coalmine.deployments`` → ``coalmine.deployment_events`` (one row per generation), the
detector's ``coalmine.judgements``, ``coalmine.alerts`` and ``coalmine.rollbacks`` → the
tables of the same names (one row per event id), and both approval topics →
``coalmine.approvals`` (one row per record).

The worker's agents hand each batch of records here and acknowledge it once this returns
``True``: rows are stored before offsets move. The stores are idempotent (see
:mod:`streams.storage.control`), so a batch delivered again adds nothing. A record that is
not what its topic holds is skipped, counted and logged: the control topics have no dead
letter topic, and the record stays on its topic for anyone to inspect. No Faust here, and
the stores are interfaces: unit tests drive it with in-memory ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from pydantic import ValidationError

from schemas.alert import Alert
from schemas.approval import ApprovalDecision, ApprovalRequest
from schemas.deployment import DeploymentState
from schemas.judgement import Judgement
from schemas.rollback import RollbackCommand
from schemas.version import AgentVersion
from streams.alerts.records import parse_event_record
from streams.ingest.route import RawMessage
from streams.logs import RateLimitedLog
from streams.runtime.processor import Retrier
from streams.storage.control import Appended, ControlWrite, Positioned
from streams.storage.detector_events import E, EventTable
from streams.versions.catalog import (
    InvalidRecordError,
    parse_keyed_record,
    parse_version_record,
)
from streams.versions.load import describe_validation_error

log = logging.getLogger(__name__)

Record = TypeVar(
    "Record", AgentVersion, DeploymentState, Judgement, Alert, RollbackCommand, Appended
)


def parse_deployment_record(key: bytes | None, value: bytes | None) -> DeploymentState:
    """The state a ``coalmine.deployments`` record holds, or :class:`InvalidRecordError`."""
    return parse_keyed_record(
        DeploymentState,
        key,
        value,
        key_of=lambda state: state.agent,
        what="a deployment state",
        deleted="the audit trail keeps every generation",
    )


class VersionStore(Protocol):
    async def write(self, versions: Sequence[Positioned[AgentVersion]]) -> ControlWrite:
        """Store each label's first version once; any failure raised."""


class DeploymentEventStore(Protocol):
    async def write(
        self, states: Sequence[Positioned[DeploymentState]], received_at: datetime
    ) -> ControlWrite:
        """Store one row per (agent, generation) once; any failure raised."""


def approval_parser(
    model: type[ApprovalRequest] | type[ApprovalDecision],
) -> Callable[[RawMessage], Appended]:
    """What a record of an approval topic holds, with its append time; else
    :class:`InvalidRecordError`. Keys are not checked: the rule reads values only."""

    def parse(message: RawMessage) -> Appended:
        if message.value is None:
            raise InvalidRecordError("a tombstone (approval records are never deleted)")
        if message.timestamp_ms is None:
            raise InvalidRecordError("no timestamp (the topic must use LogAppendTime)")
        try:
            event = model.model_validate_json(message.value)
        except ValidationError as exc:
            why = describe_validation_error(exc)
            raise InvalidRecordError(f"not {model.__name__}: {why}") from None
        return Appended(event, datetime.fromtimestamp(message.timestamp_ms / 1000, UTC))

    return parse


class ApprovalStore(Protocol):
    async def write(self, records: Sequence[Positioned[Appended]]) -> ControlWrite:
        """Store each (topic, offset) once; any failure raised."""


class DetectorEventStore(Protocol):
    async def write(self, table: EventTable[E], events: Sequence[Positioned[E]]) -> ControlWrite:
        """Store the first record of each (agent, id) once; any failure raised."""


@dataclass
class ControlCounters:
    versions_stored: int = 0
    version_repeats: int = 0
    deployment_events_stored: int = 0
    deployment_repeats: int = 0
    judgements_stored: int = 0
    alerts_stored: int = 0
    rollbacks_stored: int = 0
    detector_event_repeats: int = 0
    """Records of a stored event id: delivered again, or the detector deciding again."""
    approval_records_stored: int = 0
    control_conflicts: int = 0
    """Records naming a stored label or generation with other content (not stored)."""
    control_records_skipped: int = 0
    """Records that are not what their topic holds, or that ClickHouse refused."""


class ControlRecorder:
    """Stores batches of control records; ``False`` means the worker stopped before the
    batch was stored (leave it unacknowledged). A write that can never succeed raises
    :class:`~streams.runtime.processor.PipelineBugError`: the worker must stop."""

    def __init__(
        self,
        versions: VersionStore,
        deployments: DeploymentEventStore,
        events: DetectorEventStore,
        approvals: ApprovalStore,
        *,
        retry: Retrier,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._versions = versions
        self._deployments = deployments
        self._events = events
        self._approvals = approvals
        self._retry = retry
        self._clock = clock
        self._warn = RateLimitedLog(log, logging.WARNING, interval_s=5.0)
        self.counters = ControlCounters()

    async def record_approval_requests(self, messages: Sequence[RawMessage]) -> bool:
        return await self._record_approvals(messages, approval_parser(ApprovalRequest))

    async def record_approval_decisions(self, messages: Sequence[RawMessage]) -> bool:
        return await self._record_approvals(messages, approval_parser(ApprovalDecision))

    async def _record_approvals(
        self, messages: Sequence[RawMessage], parse: Callable[[RawMessage], Appended]
    ) -> bool:
        records = self._parsed(messages, parse)
        written = await self._stored("approvals", lambda: self._approvals.write(records))
        if written is None:
            return False
        self.counters.approval_records_stored += written.inserted
        return True

    async def record_versions(self, messages: Sequence[RawMessage]) -> bool:
        versions = self._parsed(messages, _by_key(parse_version_record))
        written = await self._stored("agent versions", lambda: self._versions.write(versions))
        if written is None:
            return False
        self.counters.versions_stored += written.inserted
        self.counters.version_repeats += written.repeats
        return True

    async def record_deployments(self, messages: Sequence[RawMessage]) -> bool:
        states = self._parsed(messages, _by_key(parse_deployment_record))
        received_at = datetime.fromtimestamp(self._clock(), UTC)
        written = await self._stored(
            "deployment events", lambda: self._deployments.write(states, received_at)
        )
        if written is None:
            return False
        self.counters.deployment_events_stored += written.inserted
        self.counters.deployment_repeats += written.repeats
        return True

    async def record_events(
        self,
        table: EventTable[E],
        messages: Sequence[RawMessage],
        then: Callable[[Sequence[E]], None] | None = None,
    ) -> bool:
        """Store a batch of a detector topic; ``then`` gets the events stored for the first
        time (not repeats), once they are stored."""
        events = self._parsed(
            messages, lambda message: parse_event_record(table.model, message.key, message.value)
        )
        written = await self._stored(table.name, lambda: self._events.write(table, events))
        if written is None:
            return False
        stored = f"{table.name}_stored"
        setattr(self.counters, stored, getattr(self.counters, stored) + written.inserted)
        self.counters.detector_event_repeats += written.repeats
        if then is not None and written.stored:
            then(written.stored)
        return True

    async def _stored(
        self, what: str, write: Callable[[], Awaitable[ControlWrite]]
    ) -> ControlWrite | None:
        """``write``, retried; what it refused logged and counted. None: the worker stopped."""
        written = await self._retry(f"storing {what}", write)
        if written is not None:
            self._count_dropped(written)
        return written

    def _count_dropped(self, written: ControlWrite) -> None:
        for reason in (*written.conflicts, *written.refused):
            self._warn("not stored: %s", reason)
        self.counters.control_conflicts += len(written.conflicts)
        self.counters.control_records_skipped += len(written.refused)

    def _parsed(
        self,
        messages: Sequence[RawMessage],
        parse: Callable[[RawMessage], Record],
    ) -> list[Positioned[Record]]:
        parsed = []
        for message in messages:
            try:
                parsed.append(Positioned(parse(message), message.offset))
            except InvalidRecordError as exc:
                self.counters.control_records_skipped += 1
                self._warn(
                    "skipping %s[%d]@%d: %s",
                    message.topic,
                    message.partition,
                    message.offset,
                    exc,
                )
        return parsed


def _by_key(
    parse: Callable[[bytes | None, bytes | None], Record],
) -> Callable[[RawMessage], Record]:
    return lambda message: parse(message.key, message.value)
