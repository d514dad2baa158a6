"""The control recorder's promises: a batch is stored (retried while the store fails) before
it is acknowledged, junk is skipped and counted, and a stopping worker leaves it unstored."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from schemas.approval import ApprovalDecision, Decision
from schemas.deployment import DeploymentState
from schemas.version import AgentVersion
from streams.ingest.route import RawMessage
from streams.runtime.control import ControlRecorder, parse_deployment_record
from streams.runtime.processor import PipelineBugError, Retrier, RetryPolicy
from streams.storage.control import Appended, ControlWrite, Positioned
from streams.versions.catalog import InvalidRecordError
from tests.unit.storage.test_control_rows import canary_state
from tests.unit.versions.test_diff import example

NO_WAIT = RetryPolicy(first_delay_s=0.0, max_delay_s=0.0)


class FlakyStores:
    """Both stores in memory; the first ``failures`` writes fail as a lost connection would."""

    def __init__(self, failures: int = 0, error: Exception | None = None) -> None:
        self.failures = failures
        self.error = error or ConnectionError("ClickHouse went away")
        self.versions: list[list[Positioned[AgentVersion]]] = []
        self.states: list[list[Positioned[DeploymentState]]] = []
        self.approvals: list[list[Positioned[Appended]]] = []

    def _fail_maybe(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise self.error


class VersionStore(FlakyStores):
    async def write(self, versions: Sequence[Positioned[AgentVersion]]) -> ControlWrite:
        self._fail_maybe()
        self.versions.append(list(versions))
        return ControlWrite(inserted=len(versions), conflicts=["v1 named other content"])


class EventStore(FlakyStores):
    async def write(
        self, states: Sequence[Positioned[DeploymentState]], received_at: datetime
    ) -> ControlWrite:
        self._fail_maybe()
        self.states.append(list(states))
        return ControlWrite(inserted=len(states) - 2, repeats=1, refused=["out of range"])


class ApprovalStore(FlakyStores):
    async def write(self, records: Sequence[Positioned[Appended]]) -> ControlWrite:
        self._fail_maybe()
        self.approvals.append(list(records))
        return ControlWrite(inserted=len(records))


def recorder(versions: VersionStore, events: EventStore, stopping: bool = False) -> ControlRecorder:
    return ControlRecorder(versions, events, ApprovalStore(), Retrier(lambda: stopping, NO_WAIT))


def messages(topic: str, *records: tuple[bytes | None, bytes | None]) -> list[RawMessage]:
    return [RawMessage(topic, 0, offset, key, value) for offset, (key, value) in enumerate(records)]


def test_versions_are_stored_after_retries_and_junk_is_counted() -> None:
    versions, events = VersionStore(failures=2), EventStore()
    control = recorder(versions, events)
    v1 = example("v1")
    batch = messages(
        "coalmine.versions",
        (v1.key.encode(), v1.model_dump_json().encode()),
        (b"support-bot/v1", None),
        (b"support-bot/v2", b"{broken"),
    )
    assert asyncio.run(control.record_versions(batch)) is True
    assert [[(p.value, p.offset) for p in b] for b in versions.versions] == [[(v1, 0)]]
    assert control.counters.versions_stored == 1
    assert control.counters.control_conflicts == 1
    assert control.counters.control_records_skipped == 2


def test_deployment_states_are_stored_and_repeats_and_refusals_counted() -> None:
    versions, events = VersionStore(), EventStore(failures=1)
    control = recorder(versions, events)
    state = canary_state().model_dump_json().encode()
    batch = messages("coalmine.deployments", *[(b"support-bot", state)] * 3)
    assert asyncio.run(control.record_deployments(batch)) is True
    assert [p.offset for p in events.states[0]] == [0, 1, 2]
    assert control.counters.deployment_events_stored == 1
    assert control.counters.deployment_repeats == 1
    assert control.counters.control_records_skipped == 1


def test_a_stopping_worker_leaves_the_batch_unstored() -> None:
    control = recorder(VersionStore(failures=1), EventStore(failures=1), stopping=True)
    state = canary_state().model_dump_json().encode()
    assert asyncio.run(control.record_deployments(messages("d", (b"support-bot", state)))) is False
    assert control.counters.deployment_events_stored == 0


def test_a_write_no_retry_can_mend_stops_the_worker() -> None:
    events = EventStore(failures=1, error=ValueError("a bug of ours"))
    control = recorder(VersionStore(), events)
    state = canary_state().model_dump_json().encode()
    with pytest.raises(PipelineBugError):
        asyncio.run(control.record_deployments(messages("d", (b"support-bot", state))))


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"support-bot", None, "a tombstone"),
        (b"support-bot", b"[]", "not a deployment state: "),
        (
            b"other-bot",
            canary_state().model_dump_json().encode(),
            "is not 'support-bot', the key of its value",
        ),
    ],
)
def test_a_deployment_record_must_be_a_state_of_its_key(
    key: bytes, value: bytes | None, reason: str
) -> None:
    with pytest.raises(InvalidRecordError, match=reason):
        parse_deployment_record(key, value)


def test_approval_records_are_stored_with_their_append_time_and_junk_is_counted() -> None:
    approvals = ApprovalStore(failures=1)
    control = ControlRecorder(
        VersionStore(), EventStore(), approvals, Retrier(lambda: False, NO_WAIT)
    )
    decision = ApprovalDecision(
        id="b" * 32,
        request_id="a" * 32,
        agent="support-bot",
        time=datetime(2026, 1, 1, tzinfo=UTC),
        decision=Decision.APPROVE,
        decided_by="ana",
    )
    value = decision.model_dump_json().encode()
    batch = [
        RawMessage("d", 0, 0, None, value, timestamp_ms=1_767_225_600_250),
        RawMessage("d", 0, 1, None, None, timestamp_ms=1),  # a tombstone
        RawMessage("d", 0, 2, None, value),  # no append time
        RawMessage("d", 0, 3, None, b'{"id": 1}', timestamp_ms=1),
    ]
    assert asyncio.run(control.record_approval_decisions(batch)) is True
    ((stored,),) = approvals.approvals
    assert stored.offset == 0
    assert stored.value == Appended(decision, datetime(2026, 1, 1, 0, 0, 0, 250_000, tzinfo=UTC))
    assert control.counters.approval_records_stored == 1
    assert control.counters.control_records_skipped == 3
