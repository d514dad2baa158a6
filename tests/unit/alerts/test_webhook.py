"""The webhook sender without a network or a clock: a scripted transport, recorded sleeps."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable

import pytest

from streams.alerts.webhook import (
    AlertQueue,
    Delivery,
    WebhookSender,
    delivery_of,
    retry_schedule,
)
from tests.unit.alerts.examples import regression_alert


class Script:
    """A transport answering from a list: a status, or an exception raised."""

    def __init__(self, answers: Iterable[int | Exception]) -> None:
        self.answers = list(answers)
        self.posted: list[str] = []

    async def __call__(self, body: bytes) -> int:
        self.posted.append(json.loads(body)["id"])
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        return answer


def sender_with(
    script: Script, *, attempts: int = 4, capacity: int = 10
) -> tuple[WebhookSender, list[float]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    sender = WebhookSender(script, attempts=attempts, capacity=capacity, sleep=sleep)
    return sender, slept


def drain(sender: WebhookSender, until: Callable[[], bool]) -> None:
    """Run the sender's loop until ``until()``, then cancel it."""

    async def main() -> None:
        task = asyncio.ensure_future(sender.run())
        while not until():
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(main(), 5))


@pytest.mark.parametrize(
    ("status", "delivery"),
    [
        (200, Delivery.DELIVERED),
        (204, Delivery.DELIVERED),
        (500, Delivery.RETRY),
        (503, Delivery.RETRY),
        (429, Delivery.RETRY),
        (408, Delivery.RETRY),
        (301, Delivery.REFUSED),
        (401, Delivery.REFUSED),
        (404, Delivery.REFUSED),
    ],
)
def test_what_an_answer_means(status: int, delivery: Delivery) -> None:
    assert delivery_of(status) is delivery


def test_the_backoff_doubles_from_one_second_up_to_thirty() -> None:
    assert retry_schedule(8) == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert retry_schedule(1) == []


def test_an_alert_is_retried_after_500s_and_no_answer_then_delivered_once() -> None:
    script = Script([500, ConnectionRefusedError("refused"), TimeoutError(), 200])
    sender, slept = sender_with(script, attempts=5)
    sender.submit([regression_alert(alert_id="a1")])
    drain(sender, lambda: sender.counters.webhook_sent == 1)
    assert script.posted == ["a1"] * 4
    assert slept == [1.0, 2.0, 4.0]
    counters = sender.counters
    assert (counters.webhook_sent, counters.webhook_failed_attempts) == (1, 3)
    assert (counters.webhook_given_up, counters.webhook_waiting) == (0, 0)


def test_after_the_last_attempt_the_alert_is_given_up_and_the_next_one_goes() -> None:
    script = Script([503, 503, 503, 200])
    sender, slept = sender_with(script, attempts=3)
    sender.submit([regression_alert(alert_id="a1"), regression_alert(alert_id="a2")])
    drain(sender, lambda: sender.counters.webhook_sent == 1)
    assert script.posted == ["a1", "a1", "a1", "a2"]
    assert slept == [1.0, 2.0]
    assert (sender.counters.webhook_given_up, sender.counters.webhook_failed_attempts) == (1, 3)


def test_a_refusal_is_not_retried() -> None:
    script = Script([401])
    sender, slept = sender_with(script)
    sender.submit([regression_alert(alert_id="a1"), regression_alert(alert_id="a2")])
    drain(sender, lambda: sender.counters.webhook_sent == 1)
    assert script.posted == ["a1", "a2"]
    assert slept == []
    assert sender.counters.webhook_given_up == 1


def test_submitting_never_waits_and_a_full_queue_drops_the_oldest() -> None:
    script = Script([])
    sender, _ = sender_with(script, capacity=2)
    sender.submit([regression_alert(alert_id=f"a{i}") for i in range(5)])  # nothing runs yet
    assert (sender.counters.webhook_dropped, sender.counters.webhook_waiting) == (3, 2)
    drain(sender, lambda: sender.counters.webhook_sent == 2)
    assert script.posted == ["a3", "a4"]
    assert sender.counters.webhook_waiting == 0


def test_the_queue_is_first_in_first_out_within_its_capacity() -> None:
    queue = AlertQueue(2)
    assert [queue.put(b"1"), queue.put(b"2"), queue.put(b"3")] == [False, False, True]
    assert [queue.take(), queue.take(), queue.take()] == [b"2", b"3", None]
    assert len(queue) == 0
