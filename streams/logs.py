"""Keeps a broker outage from flooding a log: the agent's, and the worker's.

:class:`RateLimitedLog` limits lines of our own (the SDK's delivery failures, the worker's
dead letters): the first one is logged, then at most one per interval, with a count of those
held back. This module needs only the standard library: the SDK imports it.

:class:`RepeatFilter` limits the worker's library lines. aiokafka logs every failed
connection, metadata refresh, fetch and produce attempt: an 18 s broker outage under traffic
wrote 2,708 lines (`Unable connect to node with id 1`, `Unable to update metadata`, `Failed
fetch messages`, `Got error produce response`...). The same five lines every ten seconds say
as much.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

OWN_LOGGERS = ("streams", "coalmine")
"""Loggers of this project, left alone: where their lines repeat they are already limited
(backoff between retries, :class:`RateLimitedLog`)."""
MAX_KEYS = 1024


@dataclass
class _Seen:
    last: float
    suppressed: int = 0


class RepeatFilter(logging.Filter):
    """Lets a record through if no record of the same logger, level and message template
    passed in the last ``interval_s``; the next one let through says how many were held back.

    Records of :data:`OWN_LOGGERS` always pass. Install it on handlers, not loggers: a
    logger's filters do not see the records of its children (``aiokafka.conn``...).
    """

    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self._interval_s = interval_s
        self._clock = clock
        self._seen: dict[tuple[str, int, str], _Seen] = {}
        self._lock = threading.Lock()  # aiokafka's consumer logs from Faust's consumer thread

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".", 1)[0] in OWN_LOGGERS:
            return True
        with self._lock:
            return self._let_through(record, self._clock())

    def _let_through(self, record: logging.LogRecord, now: float) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        seen = self._seen.get(key)
        if seen is not None and now - seen.last < self._interval_s:
            seen.suppressed += 1
            return False
        if seen is not None and seen.suppressed:
            record.msg = (
                f"{record.msg} ({seen.suppressed} similar message(s) suppressed "
                f"in {now - seen.last:.0f} s)"
            )
        if seen is None and len(self._seen) >= MAX_KEYS:
            self._forget_before(now - self._interval_s)
        self._seen[key] = _Seen(now)
        return True

    def _forget_before(self, cutoff: float) -> None:
        # Messages Faust formats itself vary (drifts, counts); their entries must not pile up.
        self._seen = {key: seen for key, seen in self._seen.items() if seen.last >= cutoff}


def quiet_repeats(logger: logging.Logger, interval_s: float = 10.0) -> None:
    """Put one :class:`RepeatFilter` on each of ``logger``'s handlers."""
    repeat_filter = RepeatFilter(interval_s)
    for handler in logger.handlers:
        handler.addFilter(repeat_filter)


class RateLimitedLog:
    """Logs the first occurrence, then at most once per ``interval_s``, saying how many
    similar messages were held back. A broker outage must not flood the agent's logs."""

    def __init__(
        self,
        log: logging.Logger,
        level: int,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = log
        self._level = level
        self._interval_s = interval_s
        self._clock = clock
        self._last = -math.inf
        self._suppressed = 0
        self._lock = threading.Lock()

    def __call__(self, message: str, *args: object) -> None:
        self.log(self._level, message, *args)

    def log(self, level: int, message: str, *args: object) -> None:
        with self._lock:
            now = self._clock()
            if now - self._last < self._interval_s:
                self._suppressed += 1
                return
            suppressed, self._suppressed, self._last = self._suppressed, 0, now
        if suppressed:
            message += f" ({suppressed} similar message(s) suppressed)"
        self._logger.log(level, message, *args)


SDK_LIBRDKAFKA_LOG = "coalmine.sdk.librdkafka"
"""Where an agent process's Kafka clients (publisher, router, approvals) log."""


def librdkafka_log(name: str) -> RateLimitedLog:
    """A confluent-kafka client's ``logger``: librdkafka writes to stderr by default, a line
    per reconnect attempt while a broker is down; this sends them through logging ``name``,
    rate-limited."""
    return RateLimitedLog(logging.getLogger(name), logging.WARNING)
