"""``coalmine approvals``: the approval topics read into a :class:`~streams.approvals.board.
Board`, and decisions sent and read back.

A decision goes to ``coalmine.approval-decisions`` (``acks=all``); the command then reads the
decision log up to that record and applies the rule to it, as the waiting agent and the
worker do, so what it prints is what happened: applied, or refused with the reason (already
decided, or appended after the deadline) and a non-zero exit.
"""

from __future__ import annotations

import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Final

from confluent_kafka import KafkaError, Message, Producer
from pydantic import ValidationError

from schemas.approval import ApprovalDecision, Decision
from schemas.topics import APPROVAL_DECISIONS, APPROVAL_REQUESTS
from streams.approvals.board import Board, Entry, request_line, verdict_line
from streams.errors import CoalmineError
from streams.logs import librdkafka_log
from streams.sdk.approval_rules import Verdict
from streams.sdk.compacted import CompactedReader
from streams.sdk.kafka_security import client_config
from streams.settings import Settings

KAFKA_TIMEOUT_S: Final = 10.0
FOLLOW_INTERVAL_S: Final = 0.5


class DecisionRefusedError(CoalmineError):
    """The decision reached the log, and the rule refused it; the message says why."""


def _now() -> datetime:
    return datetime.now(UTC)


class Desk:
    """Both approval topics, read from their beginning and on: :meth:`new_requests`, then
    :meth:`new_decisions` (or both, :meth:`catch_up`)."""

    def __init__(self, settings: Settings) -> None:
        config = client_config(settings)
        self.board = Board(_now)
        self._requests = CompactedReader(
            config, settings.topic(APPROVAL_REQUESTS), KAFKA_TIMEOUT_S, missing_ok=True
        )
        try:
            self._decisions = CompactedReader(
                config, settings.topic(APPROVAL_DECISIONS), KAFKA_TIMEOUT_S, missing_ok=True
            )
        except CoalmineError:
            self._requests.close()
            raise

    def new_requests(self) -> list[Entry]:
        return self.board.add_requests(self._requests.catch_up())

    def new_decisions(self) -> list[tuple[Entry, Verdict]]:
        return self.board.add_decisions(self._decisions.catch_up())

    def catch_up(self) -> None:
        self.new_requests()
        self.new_decisions()

    def close(self) -> None:
        self._requests.close()
        self._decisions.close()


def list_requests(settings: Settings, agent: str | None, every: bool, follow: bool) -> int:
    desk = Desk(settings)
    try:
        desk.catch_up()
        now = _now()
        entries = desk.board.listed(now, agent=agent, every=every)
        for entry in entries:
            print(request_line(entry, now), flush=True)
        if not entries and not follow:
            print("no approval requests" if every else "no pending approval requests")
        if follow:
            print("(following new requests and decisions; Ctrl-C stops)", file=sys.stderr)
        while follow:
            time.sleep(FOLLOW_INTERVAL_S)
            for entry in desk.new_requests():
                if agent is None or entry.request.agent == agent:
                    print(request_line(entry, _now()), flush=True)
            for entry, verdict in desk.new_decisions():
                if agent is None or entry.request.agent == agent:
                    print(verdict_line(entry, verdict), flush=True)
        return 0
    finally:
        desk.close()


PAST: Final = {Decision.APPROVE: "approved", Decision.DENY: "denied", Decision.EXPIRE: "expired"}


def decide(
    settings: Settings, request_id: str, decision: Decision, decided_by: str, reason: str
) -> int:
    """Send ``decision`` about ``request_id``, read the log back to it, print what the rule
    made of it; a refused decision raises :class:`DecisionRefusedError`."""
    desk = Desk(settings)
    try:
        desk.catch_up()
        entry = desk.board.entries.get(request_id)
        if entry is None:
            raise CoalmineError(
                f"no approval request {request_id} (see `coalmine approvals list --all`)"
            )
        try:
            sent = ApprovalDecision(
                id=uuid.uuid4().hex,
                request_id=request_id,
                agent=entry.request.agent,
                time=_now(),
                decision=decision,
                decided_by=decided_by,
                reason=reason,
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            raise CoalmineError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        _produce(settings, sent)
        give_up = time.monotonic() + KAFKA_TIMEOUT_S
        while time.monotonic() < give_up:
            for _, verdict in desk.new_decisions():
                if verdict.decision.id == sent.id:
                    return _report(entry, verdict)
            time.sleep(0.05)
        raise CoalmineError(
            f"the decision was sent but not read back within {KAFKA_TIMEOUT_S:.0f} s; "
            "`coalmine approvals list --all` shows what came of it"
        )
    finally:
        desk.close()


def _report(entry: Entry, verdict: Verdict) -> int:
    if not verdict.applied:
        raise DecisionRefusedError(f"refused: {verdict.refusal}")
    request = entry.request
    print(
        f"{PAST[verdict.decision.decision]}: {request.tool} of {request.agent} "
        f"{request.version} ({request.id})"
    )
    return 0


def _produce(settings: Settings, decision: ApprovalDecision) -> None:
    failures: list[str] = []

    def delivered(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            failures.append(error.str())

    producer = Producer(
        {
            **client_config(settings),
            "acks": "all",
            "enable.idempotence": True,
            "logger": librdkafka_log("coalmine.librdkafka"),
        }
    )
    producer.produce(
        settings.topic(APPROVAL_DECISIONS),
        key=decision.request_id.encode(),
        value=decision.model_dump_json(),
        on_delivery=delivered,
    )
    if producer.flush(KAFKA_TIMEOUT_S) or failures:
        why = failures[0] if failures else "no answer"
        raise CoalmineError(f"Kafka at {settings.kafka_bootstrap} did not take the decision: {why}")
