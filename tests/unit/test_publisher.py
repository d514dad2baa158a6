"""Pure parts of the SDK transport: rate-limited logging and the stats arithmetic."""

from __future__ import annotations

import logging

import pytest

from streams.publisher import PublisherStats, RateLimitedLog


def test_rate_limited_log_says_how_many_lines_it_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    log = RateLimitedLog(logging.WARNING, interval_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="coalmine.sdk"):
        log("broker %s down", "a")  # first: logged
        for _ in range(5):
            now[0] += 1.0
            log("broker %s down", "a")  # within 10 s: held back
        now[0] += 10.0
        log("broker %s down", "b")  # next interval: logged with the count
        log.log(logging.ERROR, "other")  # same limiter, held back
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "broker a down"),
        (logging.WARNING, "broker b down (5 similar message(s) suppressed)"),
    ]


def test_pending_is_what_is_neither_delivered_nor_failed() -> None:
    stats = PublisherStats(published=10, delivered=6, failed=1, dropped=3)
    assert stats.pending == 3
