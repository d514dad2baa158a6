"""The webhook sink: each alert the worker stores for the first time, POSTed as JSON.

The pipeline never waits for it: :meth:`WebhookSender.submit` only puts the alert in a
bounded queue (when full, the oldest waiting alert is dropped and counted) and returns; one
task, :meth:`WebhookSender.run`, POSTs them in order, each retried with backoff (failed
connections, timeouts, 408, 425, 429 and 5xx answers) up to a number of attempts, then given
up and counted. Other answers (a 4xx: the URL or the token is wrong) are not retried. No
aiohttp here: the transport, one POST returning the HTTP status, is injected, and so is
the sleep, so unit tests drive the whole schedule without a network or a clock.

At least once per alert id while the worker runs: a POST that times out after the server
took it is sent again (the body's ``id`` tells copies apart). A worker killed between storing
an alert and posting it does not post it after its restart (the alert is stored by then,
and only alerts stored for the first time are posted).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Final

from schemas.alert import Alert
from streams.alerts.text import webhook_body
from streams.logs import RateLimitedLog
from streams.runtime.processor import RetryPolicy

log = logging.getLogger(__name__)

BACKOFF: Final = RetryPolicy(first_delay_s=1.0, max_delay_s=30.0)
RETRIED_STATUSES: Final = frozenset({408, 425, 429})

Transport = Callable[[bytes], Awaitable[int]]
"""POSTs a body and returns the answer's HTTP status; raises when no answer came (refused
connection, timeout...)."""


class Delivery(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REFUSED = "refused"


def delivery_of(status: int) -> Delivery:
    """What an HTTP answer means for the alert: 2xx delivered; 408, 425, 429 and 5xx worth
    another try; anything else (a redirect, a 4xx) refused for good."""
    if 200 <= status < 300:
        return Delivery.DELIVERED
    if status in RETRIED_STATUSES or 500 <= status < 600:
        return Delivery.RETRY
    return Delivery.REFUSED


def retry_schedule(attempts: int, policy: RetryPolicy = BACKOFF) -> list[float]:
    """The waits between the ``attempts`` POSTs of one alert: 1, 2, 4, 8, 16, 30, 30... s."""
    return [policy.delay(attempt) for attempt in range(attempts - 1)]


@dataclass
class WebhookCounters:
    webhook_sent: int = 0
    webhook_failed_attempts: int = 0
    """POSTs that failed (no answer, or an answer worth retrying), given up or not."""
    webhook_given_up: int = 0
    """Alerts not delivered after every attempt, or refused by the webhook."""
    webhook_dropped: int = 0
    """Alerts dropped unsent because the queue was full (the oldest goes)."""
    webhook_waiting: int = 0


class AlertQueue:
    """A FIFO of at most ``capacity`` bodies; :meth:`put` on a full one drops the oldest."""

    def __init__(self, capacity: int) -> None:
        self._items: deque[bytes] = deque()
        self._capacity = capacity

    def put(self, body: bytes) -> bool:
        """Queue ``body``; ``True`` when the oldest was dropped to make room."""
        dropped = len(self._items) >= self._capacity
        if dropped:
            self._items.popleft()
        self._items.append(body)
        return dropped

    def take(self) -> bytes | None:
        return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        return len(self._items)


class WebhookSender:
    """Queue alerts with :meth:`submit`; :meth:`run` (one task) delivers them."""

    def __init__(
        self,
        transport: Transport,
        *,
        attempts: int,
        capacity: int,
        policy: RetryPolicy = BACKOFF,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._transport = transport
        self._attempts = attempts
        self._policy = policy
        self._sleep = sleep
        self._queue = AlertQueue(capacity)
        self._ready = asyncio.Event()
        self._warn = RateLimitedLog(log, logging.WARNING, interval_s=10.0)
        self.counters = WebhookCounters()

    def submit(self, alerts: Sequence[Alert]) -> None:
        """Queue ``alerts`` for the webhook and return at once."""
        for alert in alerts:
            if self._queue.put(webhook_body(alert)):
                self.counters.webhook_dropped += 1
                self._warn("the alert webhook's queue is full: the oldest alert was dropped")
        self.counters.webhook_waiting = len(self._queue)
        self._ready.set()

    async def run(self) -> None:
        """Deliver queued alerts, in order, until cancelled."""
        while True:
            body = self._queue.take()
            if body is None:
                self._ready.clear()
                await self._ready.wait()
                continue
            await self._deliver(body)
            self.counters.webhook_waiting = len(self._queue)

    async def _deliver(self, body: bytes) -> None:
        for attempt in range(self._attempts):
            if attempt:
                await self._sleep(self._policy.delay(attempt - 1))
            try:
                status = await self._transport(body)
                outcome, problem = delivery_of(status), f"HTTP {status}"
            except Exception as exc:  # no answer: refused, reset, timed out, unresolvable
                outcome, problem = Delivery.RETRY, f"{type(exc).__name__}: {exc}"
            if outcome is Delivery.DELIVERED:
                self.counters.webhook_sent += 1
                return
            self.counters.webhook_failed_attempts += 1
            self._warn("posting an alert to the webhook failed (%s)", problem)
            if outcome is Delivery.REFUSED:
                break
        self.counters.webhook_given_up += 1
        self._warn("an alert was not delivered to the webhook; it stays in coalmine.alerts")
