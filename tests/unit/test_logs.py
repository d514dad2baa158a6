"""Held-back repeats: a library logging every reconnect attempt gives one line per interval,
and so does our own code reporting the same failure again."""

from __future__ import annotations

import logging

import pytest

from streams.logs import RateLimitedLog, RepeatFilter, quiet_repeats


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_repeats_of_a_template_pass_once_per_interval_and_say_how_many_were_held() -> None:
    clock = Clock()
    repeats = RepeatFilter(interval_s=10.0, clock=clock)
    template = "Unable connect to node with id %s: %s"
    passed = []
    for tick in range(250):  # 25 s of one attempt every 0.1 s
        clock.now = tick / 10
        line = record("aiokafka", template, 1, "[Errno 111] Connection refused")
        if repeats.filter(line):
            passed.append(line.getMessage())
    assert passed == [
        "Unable connect to node with id 1: [Errno 111] Connection refused",
        "Unable connect to node with id 1: [Errno 111] Connection refused "
        "(99 similar message(s) suppressed in 10 s)",
        "Unable connect to node with id 1: [Errno 111] Connection refused "
        "(99 similar message(s) suppressed in 10 s)",
    ]


def test_templates_loggers_and_levels_are_limited_separately() -> None:
    repeats = RepeatFilter(interval_s=10.0, clock=Clock())
    lines = [
        record("aiokafka", "Unable to update metadata from %s", [1]),
        record("aiokafka", "Unable connect to node with id %s: %s", 1, "refused"),
        record("aiokafka.consumer.fetcher", "Unable to update metadata from %s", [1]),
        record("aiokafka", "Unable to update metadata from %s", [1], level=logging.WARNING),
    ]
    assert [repeats.filter(line) for line in lines] == [True, True, True, True]
    assert [repeats.filter(line) for line in lines] == [False, False, False, False]


def test_the_projects_own_loggers_are_never_held_back() -> None:
    repeats = RepeatFilter(interval_s=10.0, clock=Clock())
    for name in ("streams.runtime.processor", "coalmine.sdk"):
        assert all(repeats.filter(record(name, "%s failed", "insert")) for _ in range(5))


def test_entries_of_messages_that_vary_do_not_pile_up() -> None:
    clock = Clock()
    repeats = RepeatFilter(interval_s=1.0, clock=clock)
    for i in range(5000):
        clock.now = i * 0.01
        assert repeats.filter(record("faust", f"Timer woke up late by {i} ms"))
    assert len(repeats._seen) <= 1024 + 100


def test_quiet_repeats_filters_every_handler_of_the_logger() -> None:
    logger = logging.Logger("test-root")
    handlers = [logging.NullHandler(), logging.NullHandler()]
    for handler in handlers:
        logger.addHandler(handler)
    quiet_repeats(logger)
    assert all(any(isinstance(f, RepeatFilter) for f in h.filters) for h in handlers)


def test_rate_limited_log_says_how_many_lines_it_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [100.0]
    log = RateLimitedLog(
        logging.getLogger("coalmine.sdk"), logging.WARNING, interval_s=10.0, clock=lambda: now[0]
    )
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
