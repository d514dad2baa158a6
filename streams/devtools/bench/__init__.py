"""Benchmarks that print their figures (``coalmine bench …``), and what they share."""

from __future__ import annotations

import statistics
import uuid
from contextlib import ExitStack
from dataclasses import replace

from streams.devtools import localkafka
from streams.devtools.localkafka import process
from streams.devtools.localkafka.config import local_address
from streams.settings import Settings
from streams.topics import ensure_topics


def bench_topics(settings: Settings, cleanup: ExitStack, name: str) -> Settings:
    """``settings`` with topics of the run's own (created), on the broker of ``settings``, or
    on a local one started until ``cleanup`` closes when none answers there."""
    local = local_address(settings)
    if local is not None and not process.answers(*local):
        cleanup.enter_context(localkafka.LocalKafka(settings))
    settings = replace(settings, topic_prefix=f"{name}-{uuid.uuid4().hex[:8]}")
    ensure_topics(settings)
    return settings


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (
        f"p50 {statistics.median(ordered):7.1f}   p99 {p99:7.1f}   max {ordered[-1]:7.1f}"
        f"   (n={len(ordered)})"
    )


def say(message: str) -> None:
    print(message, flush=True)
