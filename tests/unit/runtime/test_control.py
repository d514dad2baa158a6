"""The control recorder's promises: a batch is stored (retried while the store fails) before
it is acknowledged, junk is skipped and counted, and a stopping worker leaves it unstored."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.alert import Alert
from schemas.approval import ApprovalDecision, Decision
from schemas.deployment import DeploymentState
from schemas.judgement import Verdict
from schemas.version import AgentVersion
from streams.ingest.route import RawMessage
from streams.runtime.control import ControlRecorder, parse_deployment_record
from streams.runtime.processor import PipelineBugError, Retrier, RetryPolicy
from streams.storage.control import Appended, ControlWrite, Positioned
from streams.storage.detector_events import (
    ALERTS_TABLE,
    JUDGEMENTS_TABLE,
    ROLLBACKS_TABLE,
    E,
    EventTable,
)
from streams.versions.catalog import InvalidRecordError
from tests.unit.alerts.examples import judgement, regression_alert, rollback_request
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


class DetectorStore(FlakyStores):
    """Keeps the first event of each (agent, id), as the ClickHouse writer does."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__(failures)
        self.rows: dict[str, dict[tuple[str, str], Any]] = {}

    async def write(self, table: EventTable[E], events: Sequence[Positioned[E]]) -> ControlWrite:
        self._fail_maybe()
        rows = self.rows.setdefault(table.name, {})
        written = ControlWrite()
        for positioned in events:
            key = (positioned.value.agent, positioned.value.id)
            if key in rows:
                written.repeats += 1
            else:
                rows[key] = positioned.value
                written.stored.append(positioned.value)
        written.inserted = len(written.stored)
        return written


class ApprovalStore(FlakyStores):
    async def write(self, records: Sequence[Positioned[Appended]]) -> ControlWrite:
        self._fail_maybe()
        self.approvals.append(list(records))
        return ControlWrite(inserted=len(records))


def recorder(
    versions: VersionStore,
    events: EventStore,
    stopping: bool = False,
    detector: DetectorStore | None = None,
    approvals: ApprovalStore | None = None,
) -> ControlRecorder:
    return ControlRecorder(
        versions,
        events,
        detector or DetectorStore(),
        approvals or ApprovalStore(),
        retry=Retrier(lambda: stopping, NO_WAIT),
    )


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


def record(value: Any) -> tuple[bytes, bytes]:
    return value.agent.encode(), value.model_dump_json().encode()


def test_detector_events_are_stored_once_and_only_new_alerts_are_handed_on() -> None:
    detector = DetectorStore(failures=2)
    control = recorder(VersionStore(), EventStore(), detector=detector)
    first, second = regression_alert(alert_id="alert-1"), regression_alert(alert_id="alert-2")
    handed: list[Alert] = []
    batch = messages(
        "coalmine.alerts",
        record(first),
        record(first.model_copy(update={"message": "raised again after a restart"})),
        (b"other-bot", first.model_dump_json().encode()),  # the key is not its agent
        (b"support-bot", b'{"id": "x"}'),
        record(second),
    )
    assert asyncio.run(control.record_events(ALERTS_TABLE, batch, handed.extend)) is True
    assert handed == [first, second]
    assert asyncio.run(control.record_events(ALERTS_TABLE, batch, handed.extend)) is True
    assert handed == [first, second]  # a batch delivered again hands nothing on
    counters = control.counters
    assert (counters.alerts_stored, counters.detector_event_repeats) == (2, 4)
    assert counters.control_records_skipped == 4
    assert detector.rows["alerts"][("support-bot", "alert-1")].message == first.message


def test_judgements_and_rollbacks_are_counted_apart() -> None:
    control = recorder(VersionStore(), EventStore())
    judged = messages("coalmine.judgements", record(judgement(5, Verdict.CONTINUE)))
    rolled = messages("coalmine.rollbacks", record(rollback_request()), record(rollback_request()))
    assert asyncio.run(control.record_events(JUDGEMENTS_TABLE, judged)) is True
    assert asyncio.run(control.record_events(ROLLBACKS_TABLE, rolled)) is True
    counters = control.counters
    assert (counters.judgements_stored, counters.rollbacks_stored, counters.alerts_stored) == (
        1,
        1,
        0,
    )
    assert counters.detector_event_repeats == 1


def test_a_stopping_worker_leaves_detector_events_unstored() -> None:
    handed: list[Alert] = []
    control = recorder(VersionStore(), EventStore(), True, DetectorStore(failures=1))
    batch = messages("coalmine.alerts", record(regression_alert()))
    assert asyncio.run(control.record_events(ALERTS_TABLE, batch, handed.extend)) is False
    assert (handed, control.counters.alerts_stored) == ([], 0)


def test_approval_records_are_stored_with_their_append_time_and_junk_is_counted() -> None:
    approvals = ApprovalStore(failures=1)
    control = recorder(VersionStore(), EventStore(), approvals=approvals)
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
