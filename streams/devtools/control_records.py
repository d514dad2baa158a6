"""Control records produced by hand, for tests and benchmarks: agent versions, rollback
requests and commands for the controller, deployment states where a test is about the
routers alone, and approval requests and decisions where it is about deciding.

:func:`example_version` makes a registrable version of a simulated agent; :class:`ControlWriter`
produces records to their topics, key as the registry says.
The controller is the single writer of ``coalmine.deployments`` in production; these records
stand in for its output where a test wants to set a state directly.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from confluent_kafka import KafkaError, Message, Producer
from pydantic import BaseModel

from schemas.approval import ApprovalDecision, ApprovalRequest, Decision
from schemas.deployment import DeploymentChange, DeploymentState, Phase
from schemas.topics import DEPLOYMENTS, VERSIONS, Topic
from schemas.version import AgentBundle, AgentVersion, ModelSpec, OnTimeout, bundle_digest
from streams.errors import CoalmineError
from streams.logs import librdkafka_log
from streams.sdk.closing import ClosedOnExit
from streams.sdk.kafka_security import client_config
from streams.sdk.settings import SdkSettings

FLUSH_TIMEOUT_S = 15.0


def example_version(agent: str, version: str) -> AgentVersion:
    """A small version of ``agent`` whose prompt names it (so bundles tell versions apart)."""
    bundle = AgentBundle(
        prompts={"system": f"You are {agent}, version {version}. Answer briefly."},
        model=ModelSpec(provider="openai", model="gpt-4o-mini", parameters={"temperature": 0.2}),
    )
    return AgentVersion(
        agent=agent,
        version=version,
        digest=bundle_digest(bundle),
        created_at=datetime.now(UTC),
        created_by="coalmine-devtools",
        bundle=bundle,
    )


def rollout_state(
    stable: AgentVersion,
    canary: AgentVersion | None,
    *,
    weight: float,
    rollout_id: str,
    generation: int,
    phase: Phase = Phase.CANARY,
    reason: str = "set by hand",
) -> DeploymentState:
    """The state of ``stable``'s agent with ``canary`` at ``weight`` (0 without a canary)."""
    return DeploymentState(
        agent=stable.agent,
        phase=phase,
        stable_version=stable.version,
        stable_digest=stable.digest,
        canary_version=None if canary is None else canary.version,
        canary_digest=None if canary is None else canary.digest,
        canary_weight=weight,
        rollout_id=rollout_id,
        generation=generation,
        updated_at=datetime.now(UTC),
        last_reason=reason,
        change=DeploymentChange(from_phase=phase, cause="manual", reason=reason),
    )


def approval_request(
    agent: str,
    *,
    asked_at: datetime | None = None,
    timeout_s: float = 600.0,
    requested_by: str = "coalmine-devtools",
) -> ApprovalRequest:
    """A request to approve a ``refund`` of ``agent`` v1, as the SDK publishes one."""
    asked_at = asked_at or datetime.now(UTC)
    return ApprovalRequest(
        id=uuid.uuid4().hex,
        time=asked_at,
        deadline=asked_at + timedelta(seconds=timeout_s),
        on_timeout=OnTimeout.DENY,
        agent=agent,
        version="v1",
        tool="refund",
        asks_because="every call",
        trace_id=uuid.uuid4().hex,
        span_id=uuid.uuid4().hex[:16],
        requested_by=requested_by,
    )


def approval_decision(
    request: ApprovalRequest, decision: Decision, decided_by: str = "ana", reason: str = ""
) -> ApprovalDecision:
    """A person's decision about ``request``, as ``coalmine approvals`` sends one."""
    return ApprovalDecision(
        id=uuid.uuid4().hex,
        request_id=request.id,
        agent=request.agent,
        time=datetime.now(UTC),
        decision=decision,
        decided_by=decided_by,
        reason=reason,
    )


class ControlWriter(ClosedOnExit):
    """Produces versions and deployment states; :meth:`flush` (and :meth:`close`, at the end
    of a ``with`` block) waits until the broker has them."""

    def __init__(self, settings: SdkSettings) -> None:
        self._settings = settings
        self._producer = Producer(
            {
                **client_config(settings),
                "linger.ms": 0,
                "acks": "all",
                "enable.idempotence": True,  # records of one key keep their order on retries
                # A benchmark stops its broker while this producer still exists: its farewell
                # lines go through logging, not straight to stderr.
                "logger": librdkafka_log("coalmine.devtools"),
            }
        )
        self._failures: list[str] = []

    def version(self, version: AgentVersion) -> None:
        self.record(VERSIONS, version.key, version)

    def state(self, state: DeploymentState) -> None:
        self.record(DEPLOYMENTS, state.agent, state)

    def record(self, topic: Topic, key: str, value: BaseModel) -> None:
        """Produce ``value`` as JSON to ``topic`` (a rollback request, a command, ...)."""
        self._producer.produce(
            self._settings.topic(topic),
            value.model_dump_json().encode(),
            key.encode(),
            on_delivery=self._delivered,
        )
        self._producer.poll(0)

    def flush(self) -> None:
        """Wait until the broker has every record produced; raise if one failed."""
        if self._producer.flush(FLUSH_TIMEOUT_S):
            raise CoalmineError(
                f"Kafka at {self._settings.kafka_bootstrap} did not take the records "
                f"within {FLUSH_TIMEOUT_S:.0f} s"
            )
        if self._failures:
            failures, self._failures = self._failures, []
            raise CoalmineError(f"{len(failures)} record(s) not written: {failures[0]}")

    def close(self) -> None:
        self.flush()

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._failures.append(f"{message.topic()}: {error.str()}")
