"""``coalmine bench approvals``: how soon a waiting tool call resumes once a person decides.

One :class:`~streams.sdk.approvals.Approvals` (its one follower thread) holds the calls; the
bench plays the person with a producer of its own. ``decisions`` times over, one call at a
time: a request is asked, the call waits (alternately the blocking form, on a thread, and the
``async`` form, on an event loop), and once the request is on its topic an ``approve`` is
produced. Measured, on one machine's clock: from just before the decision is produced to the
moment the waiting call resumes (the broker's write, the follower's fetch, the rule, the
wake-up of the thread or the future), and from the broker's append time of the decision (its
LogAppendTime, read from the delivery report) to the resume. Printed as p50 / p99 / max,
beside the router's figure (a RollbackCommand reaching every router, ``coalmine bench
router``), which crosses the controller as well.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from typing import Final

from confluent_kafka import KafkaError, Message, Producer

from schemas.approval import ApprovalRequest, Decision
from schemas.topics import APPROVAL_DECISIONS, APPROVAL_REQUESTS
from streams.devtools.bench import bench_topics, percentiles, say
from streams.devtools.control_records import approval_decision, approval_request
from streams.errors import CoalmineError
from streams.sdk.approvals import ApprovalResult, Approvals, Pending
from streams.sdk.compacted import CompactedReader
from streams.sdk.kafka_security import client_config
from streams.settings import Settings

AGENT: Final = "bench-bot"
TIMEOUT_S: Final = 30.0


class Person:
    """Approves requests: waits for a request to be on its topic (as a person would read
    it), then produces the decision and notes when it was produced and appended."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._producer = Producer({**client_config(settings), "acks": "all", "linger.ms": 0})
        self._requests = CompactedReader(
            client_config(settings), settings.topic(APPROVAL_REQUESTS), TIMEOUT_S
        )

    def read_request(self, request_id: str) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            for record in self._requests.catch_up():
                if ApprovalRequest.model_validate_json(record.value or b"").id == request_id:
                    return
            time.sleep(0.005)
        raise CoalmineError(f"request {request_id} did not reach its topic in {TIMEOUT_S:.0f} s")

    def approve(self, request: ApprovalRequest) -> tuple[float, float]:
        """Produce the approval; (wall time just before producing it, its append time)."""
        appended: list[float] = []

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is None:
                appended.append(message.timestamp()[1] / 1000)

        decision = approval_decision(request, Decision.APPROVE, decided_by="bench")
        began = time.time()
        self._producer.produce(
            self._settings.topic(APPROVAL_DECISIONS),
            key=request.id.encode(),
            value=decision.model_dump_json(),
            on_delivery=delivered,
        )
        self._producer.flush(TIMEOUT_S)
        if not appended:
            raise CoalmineError("the broker did not take a decision")
        return began, appended[0]

    def close(self) -> None:
        self._requests.close()
        self._producer.flush(TIMEOUT_S)
        self._producer.close()


def resumed_blocking(approvals: Approvals, pending: Pending) -> Callable[[], float]:
    """Wait for ``pending`` on a thread; returns a function giving the resume time."""
    resumed: list[float] = []

    def wait() -> None:
        result = approvals.wait(pending)
        resumed.append(time.time())
        _check(result)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()

    def joined() -> float:
        waiter.join(TIMEOUT_S)
        if not resumed:
            raise CoalmineError("a blocking call did not resume")
        return resumed[0]

    return joined


def resumed_async(approvals: Approvals, pending: Pending) -> Callable[[], float]:
    """Wait for ``pending`` on an event loop of its own thread (the loop, not the thread,
    waits); returns a function giving the resume time."""
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()

    async def wait() -> float:
        result = await approvals.wait_async(pending)
        resumed = time.time()
        _check(result)
        return resumed

    future = asyncio.run_coroutine_threadsafe(wait(), loop)

    def joined() -> float:
        try:
            return future.result(TIMEOUT_S)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            runner.join(TIMEOUT_S)
            loop.close()

    return joined


def _check(result: ApprovalResult) -> None:
    if not result.runs:
        raise CoalmineError(f"a call was not granted: {result.outcome}")


def run(settings: Settings, *, decisions: int = 200, fetch_wait_ms: int | None = None) -> int:
    if fetch_wait_ms is not None:
        settings = replace(settings, sdk_router_fetch_wait_ms=fetch_wait_ms)
    with ExitStack() as cleanup:
        settings = bench_topics(settings, cleanup, "bench-approvals")
        say(
            f"decision -> waiting call resumed: {decisions} decisions, one at a time, "
            f"fetch.wait.max.ms={settings.sdk_router_fetch_wait_ms}"
        )
        produced, appended = measure(settings, decisions)
    every = produced["blocking"] + produced["async"]
    say(f"  produced -> resumed, ms:          {percentiles(every)}")
    say(f"    blocking form (threading.Event): {percentiles(produced['blocking'])}")
    say(f"    async form (future on its loop): {percentiles(produced['async'])}")
    say(f"  broker append -> resumed, ms:     {percentiles(appended)}")
    return 0


def measure(settings: Settings, decisions: int) -> tuple[dict[str, list[float]], list[float]]:
    """Milliseconds from each decision's produce (by form) and from its append to the
    resume; the clients are closed before this returns (the broker is still up)."""
    produced: dict[str, list[float]] = {"blocking": [], "async": []}
    appended: list[float] = []
    person = Person(settings)
    try:
        with Approvals(settings) as approvals:
            for number in range(decisions):
                form = "blocking" if number % 2 == 0 else "async"
                request = approval_request(AGENT, requested_by="bench")
                pending = approvals.ask(request)
                waiter = resumed_blocking if form == "blocking" else resumed_async
                joined = waiter(approvals, pending)
                person.read_request(request.id)
                began, appended_at = person.approve(request)
                resumed = joined()
                produced[form].append((resumed - began) * 1000)
                appended.append((resumed - appended_at) * 1000)
    finally:
        person.close()
    return produced, appended
