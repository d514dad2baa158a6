"""Human approval in the agent's process: :class:`Approvals` publishes a request for a tool
call its version's policy holds back, and resolves the call when the decision log says what
came of it.

* **No thread per pending call.** One follower thread reads ``coalmine.approval-decisions``
  (from its end when the process started: a request's decisions come after it) and settles
  every pending call: a blocking caller waits on an event, an ``async`` one on a future woken
  through its own event loop. The same thread publishes ``expire`` for each request whose
  deadline passed, from one heap of deadlines.
* **One rule for everyone.** The call resumes with the decision :func:`~streams.sdk.
  approval_rules.judge` lets win, read back from the log: the same one the command line
  reports to the person and the worker stores. A timeout is itself a decision (``expire``)
  in the log, so an approval the broker appended before it wins and one after it is refused,
  whichever clock is ahead.
* **Fail closed.** When the log cannot be read back within :data:`GRACE_S` after the
  deadline (broker down), the call is refused as timed out even if the policy says
  ``on_timeout: allow``: nobody can tell then what the log will say.

The part without Kafka is :class:`ApprovalBook` (unit tests drive it with records).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from pydantic import ValidationError

from schemas.approval import (
    OUTCOME_OF,
    ApprovalDecision,
    ApprovalRequest,
    Decision,
    Outcome,
)
from schemas.topics import APPROVAL_DECISIONS, APPROVAL_REQUESTS
from schemas.version import OnTimeout
from streams.logs import SDK_LIBRDKAFKA_LOG, RateLimitedLog, librdkafka_log
from streams.sdk.approval_rules import DecisionLog
from streams.sdk.closing import ClosedOnExit
from streams.sdk.compacted import Record
from streams.sdk.follow import TopicFollower
from streams.sdk.kafka_security import client_config
from streams.sdk.settings import SdkSettings

logger = logging.getLogger("coalmine.sdk.approvals")

GRACE_S: Final = 30.0
"""How long after its deadline a call waits for its outcome to be read back."""
READY_WAIT_S: Final = 10.0
"""How long the first request waits for the decision log to be assigned."""
MAX_REQUESTER_CHARS: Final = 128


class ApprovalError(Exception):
    """A tool call that did not run because no person approved it in time (or could not be
    asked). ``request`` is what was asked (None when nothing could be asked)."""

    def __init__(self, message: str, request: ApprovalRequest | None = None) -> None:
        super().__init__(message)
        self.request = request


class ApprovalDeniedError(ApprovalError):
    """A person denied the call; ``decision`` says who and why."""

    def __init__(self, request: ApprovalRequest, decision: ApprovalDecision) -> None:
        why = f": {decision.reason}" if decision.reason else ""
        super().__init__(
            f"{request.tool} of {request.agent} {request.version} denied by "
            f"{decision.decided_by}{why} (approval {request.id})",
            request,
        )
        self.decision = decision


class ApprovalTimeoutError(ApprovalError):
    """Nobody decided before the deadline (and the policy denies on timeout), or the
    outcome could not be read back."""


class ApprovalUnavailableError(ApprovalError):
    """The call needs approval, but nobody can be asked: no :class:`Approvals` given to the
    tracer, no bundle (policy) known for the request, or the decision log unreachable."""


@dataclass(frozen=True, slots=True)
class ApprovalResult:
    request: ApprovalRequest
    outcome: Outcome
    decision: ApprovalDecision | None
    """The winning decision; None when the outcome could not be read back."""

    @property
    def runs(self) -> bool:
        """Whether the tool runs: granted, or timed out under ``on_timeout: allow``."""
        if self.outcome is Outcome.GRANTED:
            return True
        allowed = self.request.on_timeout is OnTimeout.ALLOW
        return self.outcome is Outcome.TIMED_OUT and allowed and self.decision is not None

    def raise_unless_runs(self) -> None:
        if self.runs:
            return
        request = self.request
        if self.outcome is Outcome.DENIED and self.decision is not None:
            raise ApprovalDeniedError(request, self.decision)
        confirmed = "" if self.decision else " (its outcome could not be read back)"
        raise ApprovalTimeoutError(
            f"{request.tool} of {request.agent} {request.version}: nobody approved it by "
            f"{request.deadline:%H:%M:%S} UTC{confirmed} (approval {request.id})",
            request,
        )


@dataclass
class Pending:
    """One call waiting for its outcome."""

    request: ApprovalRequest
    settled: threading.Event = field(default_factory=threading.Event)
    result: ApprovalResult | None = None
    futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[ApprovalResult]]] = field(
        default_factory=list
    )
    expired: bool = False


def _settle_future(future: asyncio.Future[ApprovalResult], result: ApprovalResult) -> None:
    if not future.done():
        future.set_result(result)


def appended_at(record: Record, clock: Callable[[], datetime]) -> datetime:
    """A record's broker append time (the topics use LogAppendTime); now without one."""
    if record.timestamp_ms is None:
        return clock()
    return datetime.fromtimestamp(record.timestamp_ms / 1000, UTC)


class ApprovalBook:
    """The pending calls of a process and the decision log folded for them: register a
    request, feed decision records in log order (:meth:`apply`), and ask which deadlines
    passed (:meth:`due`). Thread-safe; no I/O."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: dict[str, Pending] = {}
        self._deadlines: list[tuple[datetime, str]] = []
        self._log = DecisionLog(self._deadline_of)
        self.refused = 0
        self._warn = RateLimitedLog(logger, logging.WARNING)

    def _deadline_of(self, request_id: str) -> datetime | None:
        pending = self._pending.get(request_id)
        return None if pending is None else pending.request.deadline

    def register(self, request: ApprovalRequest) -> Pending:
        pending = Pending(request)
        with self._lock:
            self._pending[request.id] = pending
            heapq.heappush(self._deadlines, (request.deadline, request.id))
        return pending

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._pending)

    def future(self, pending: Pending) -> asyncio.Future[ApprovalResult]:
        """A future of the running loop settled with ``pending``'s result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ApprovalResult] = loop.create_future()
        with self._lock:
            if pending.result is None:
                pending.futures.append((loop, future))
                return future
        assert pending.result is not None
        future.set_result(pending.result)
        return future

    def apply(self, records: Iterable[Record]) -> None:
        """Decision records in log order; each one that decides a pending call settles it."""
        for record in records:
            try:
                decision = ApprovalDecision.model_validate_json(record.value or b"")
            except ValidationError as exc:
                self._warn("decision at offset %d skipped: %s", record.offset, exc.errors()[0])
                continue
            with self._lock:
                verdict = self._log.apply(decision, appended_at(record, self._clock))
                if verdict is None:
                    continue
                if not verdict.applied:
                    self.refused += 1
                    continue
                pending = self._pending.pop(decision.request_id)
                self._log.forget(decision.request_id)
            self._settle(
                pending, ApprovalResult(pending.request, OUTCOME_OF[decision.decision], decision)
            )

    def due(self, now: datetime) -> list[ApprovalRequest]:
        """Requests whose deadline passed and whose ``expire`` has not been sent; each is
        returned once."""
        due = []
        with self._lock:
            while self._deadlines and self._deadlines[0][0] <= now:
                _, request_id = heapq.heappop(self._deadlines)
                pending = self._pending.get(request_id)
                if pending is not None and not pending.expired:
                    pending.expired = True
                    due.append(pending.request)
        return due

    def give_up(self, pending: Pending) -> None:
        """Settle ``pending`` as timed out without a decision read back."""
        with self._lock:
            if self._pending.pop(pending.request.id, None) is None:
                return
            self._log.forget(pending.request.id)
        self._settle(pending, ApprovalResult(pending.request, Outcome.TIMED_OUT, None))

    def _settle(self, pending: Pending, result: ApprovalResult) -> None:
        with self._lock:
            pending.result = result
            futures, pending.futures = pending.futures, []
        pending.settled.set()
        for loop, future in futures:
            loop.call_soon_threadsafe(_settle_future, future, result)


def default_requester(agent: str) -> str:
    return f"{agent}@{socket.gethostname()}:{os.getpid()}"[:MAX_REQUESTER_CHARS]


class Approvals(ClosedOnExit):
    """Asks people to approve tool calls and waits for their decisions; one per process
    serves every agent and tracer. Give it to :class:`~streams.sdk.tracer.Tracer`
    (``approvals=``); ``req.call_tool`` / ``await req.acall_tool`` do the rest. Close it (or
    use it as a context manager) to stop its thread."""

    def __init__(
        self,
        settings: SdkSettings,
        *,
        name: str = "coalmine-approvals",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._clock = clock
        self._requests_topic = settings.topic(APPROVAL_REQUESTS)
        self._decisions_topic = settings.topic(APPROVAL_DECISIONS)
        self.book = ApprovalBook(clock)
        self._producer = Producer(
            {
                **client_config(settings),
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 0,
                "logger": librdkafka_log(SDK_LIBRDKAFKA_LOG),
            }
        )
        self._warn = RateLimitedLog(logger, logging.ERROR)
        self._closed = False
        self._follower = TopicFollower(
            settings,
            [self._decisions_topic],
            self.book.apply,
            name=name,
            from_end=True,
            on_tick=self._tick,
            extra_config={"fetch.wait.max.ms": settings.sdk_router_fetch_wait_ms},
        )
        self._follower.start()

    def now(self) -> datetime:
        return self._clock()

    def ask(self, request: ApprovalRequest) -> Pending:
        """Publish ``request`` and register it; raises :class:`ApprovalUnavailableError` when the
        decision log is not being read yet (its decisions could slip past), or any more."""
        if self._closed:
            raise ApprovalUnavailableError(
                f"{request.tool} needs approval, but its Approvals is closed", request
            )
        if not self._follower.caught_up.wait(READY_WAIT_S):
            raise ApprovalUnavailableError(
                f"{request.tool} needs approval, but {self._decisions_topic} cannot be read",
                request,
            )
        pending = self.book.register(request)
        self._send(self._requests_topic, request.id, request.model_dump_json())
        return pending

    def wait(self, pending: Pending) -> ApprovalResult:
        """Block the calling thread until ``pending`` is settled."""
        if not pending.settled.wait(self._patience(pending)):
            self.book.give_up(pending)
        assert pending.result is not None
        return pending.result

    async def wait_async(self, pending: Pending) -> ApprovalResult:
        """Wait without a thread of its own until ``pending`` is settled."""
        future = self.book.future(pending)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self._patience(pending))
        except TimeoutError:
            self.book.give_up(pending)
            return await future

    def _patience(self, pending: Pending) -> float:
        return max(0.0, (pending.request.deadline - self._clock()).total_seconds()) + GRACE_S

    def _tick(self) -> None:
        """From the follower thread: publish ``expire`` for every deadline that passed."""
        for request in self.book.due(self._clock()):
            waited = (request.deadline - request.time).total_seconds()
            expire = ApprovalDecision(
                id=uuid.uuid4().hex,
                request_id=request.id,
                agent=request.agent,
                time=self._clock(),
                decision=Decision.EXPIRE,
                decided_by=request.requested_by,
                reason=f"no decision within {waited:.0f} s",
            )
            self._send(self._decisions_topic, request.id, expire.model_dump_json())
        self._producer.poll(0)

    def _send(self, topic: str, key: str, value: str) -> None:
        try:
            self._producer.produce(
                topic, key=key.encode(), value=value, on_delivery=self._delivered
            )
        except (BufferError, KafkaException) as exc:
            self._warn("cannot publish to %s: %s", topic, exc)
        self._producer.poll(0)

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self._warn("%s not delivered: %s", message.topic(), error.str())

    def close(self) -> None:
        """Stop following decisions; calls still waiting time out after their grace, and
        calls asking from now on raise :class:`ApprovalUnavailableError`. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._follower.close()
        self._producer.flush(5.0)
        self._producer.close()  # not left to the collector, which may run after the broker is gone
