"""The ingest spine end to end: SDK → real Kafka → ``coalmine worker`` → chDB spans."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest

from schemas.trace import TraceEvent
from streams.devtools.worker_process import WorkerProcess
from streams.sdk import BatchLimits, KafkaPublisher, Tracer
from streams.topics import ensure_topics
from tests.integration.harness import (
    isolated_settings,
    killed_mid_stream,
    wait_for,
    worker,
)

pytestmark = pytest.mark.integration
__all__ = ["worker"]  # the fixture, imported for the tests below

SPAN_FIELDS = (
    "toString(event_id), trace_id, span_id, parent_span_id, agent, version, toString(kind), "
    "name, toString(status), error_type, provider, model, input_tokens, output_tokens, "
    "cached_input_tokens, reasoning_tokens, cost_usd, toString(cost_source), tool_name, "
    "task_completed, quality_score, duration_ms"
)


class RecordingPublisher:
    """Publishes through Kafka and remembers every event, to compare with the stored rows."""

    def __init__(self, inner: KafkaPublisher) -> None:
        self.inner = inner
        self.events: list[TraceEvent] = []

    def publish(self, event: TraceEvent) -> None:
        self.events.append(event)
        self.inner.publish(event)

    def flush(self, timeout: float) -> int:
        return self.inner.flush(timeout)

    def close(self, timeout: float) -> None:
        self.inner.close(timeout)


def trace_requests(tracer: Tracer, count: int) -> None:
    """``count`` agent tasks, each a request with an llm call and a tool call."""
    for i in range(count):
        with tracer.request("answer", tenant="acme") as request:
            with request.llm("draft", provider="openai", model="gpt-4o-mini") as llm:
                llm.set_usage(
                    input_tokens=100 + i,
                    output_tokens=20,
                    cached_input_tokens=i % 64,
                    reasoning_tokens=i % 8,
                )
            try:
                with request.tool("search", tool_name="web_search"):
                    if i % 10 == 0:
                        raise TimeoutError("search timed out")
            except TimeoutError:
                pass
            request.set_outcome(task_completed=i % 4 != 0, quality_score=(i % 11) / 10)


def test_events_from_the_sdk_become_exactly_those_rows(worker: WorkerProcess) -> None:
    settings = worker.settings
    publisher = RecordingPublisher(KafkaPublisher.from_settings(settings))
    trace_requests(Tracer("support-bot", "v12", publisher), count=200)
    assert publisher.inner.flush(30) == 0
    assert publisher.inner.stats.delivered == len(publisher.events) == 600

    assert wait_for(worker, "SELECT count() FROM coalmine.spans", 600) == 600
    rows = {row[0]: row for row in worker.sql(f"SELECT {SPAN_FIELDS} FROM coalmine.spans")}
    assert len(rows) == 600
    for event in publisher.events:
        assert_row_matches(rows[str(event.event_id)], event)
    publisher.close(5)


def assert_row_matches(row: Sequence[Any], event: TraceEvent) -> None:
    (
        _,
        trace_id,
        span_id,
        parent,
        agent,
        version,
        kind,
        name,
        status,
        error_type,
        provider,
        model,
        input_tokens,
        output_tokens,
        cached_input_tokens,
        reasoning_tokens,
        cost,
        cost_source,
        tool_name,
        task_completed,
        quality,
        duration_ms,
    ) = row
    assert (trace_id, span_id, parent or None) == (
        event.trace_id,
        event.span_id,
        event.parent_span_id,
    )
    assert (agent, version, kind, name) == (event.agent, event.version, event.kind, event.name)
    assert (status, error_type or None) == (event.status, event.error_type)
    assert (provider or None, model or None, tool_name or None) == (
        event.provider,
        event.model,
        event.tool_name,
    )
    assert (input_tokens, output_tokens) == (event.input_tokens, event.output_tokens)
    assert (cached_input_tokens, reasoning_tokens) == (
        event.cached_input_tokens,
        event.reasoning_tokens,
    )
    assert task_completed == event.task_completed
    assert quality == pytest.approx(event.quality_score, abs=1e-6)
    assert duration_ms == pytest.approx(event.duration_ms, abs=1e-3)
    if event.model == "gpt-4o-mini":  # built-in: 0.15 input, 0.075 cached, 0.60 output per Mtok
        fresh_input = event.input_tokens - event.cached_input_tokens
        expected = (
            fresh_input * 0.15 + event.cached_input_tokens * 0.075 + event.output_tokens * 0.60
        ) / 1e6
        assert (cost, cost_source) == (pytest.approx(expected), "price_table")


class AcknowledgedIds:
    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.failed = 0
        self._lock = threading.Lock()

    def __call__(self, event_id: str, error: str | None) -> None:
        with self._lock:
            if error is None:
                self.ids.add(event_id)
            else:
                self.failed += 1


@pytest.mark.parametrize("spans_per_message", [1, 50], ids=["single", "batched"])
def test_sigkill_mid_stream_loses_nothing_and_duplicates_nothing(
    kafka_settings: Any, tmp_path: Any, spans_per_message: int
) -> None:
    settings = isolated_settings(kafka_settings, tmp_path)
    ensure_topics(settings)
    acknowledged = AcknowledgedIds()
    publisher = KafkaPublisher.from_settings(
        settings, on_delivery=acknowledged, batch=BatchLimits(max_spans=spans_per_message)
    )
    tracer = Tracer("research-agent", "v7", publisher)

    def produce() -> None:
        trace_requests(tracer, 40)  # ~3 spans per request: a steady stream during the kills

    log = tmp_path / "worker.log"
    with killed_mid_stream(settings, log, produce, kills=3, seed=20261124) as worker_process:
        assert publisher.flush(30) == 0
        expected = len(acknowledged.ids)
        assert expected > 1000 and acknowledged.failed == 0

        query = "SELECT count() FROM coalmine.spans"
        assert wait_for(worker_process, query, expected, timeout_s=180) == expected
        count, unique = worker_process.sql(
            "SELECT count(), uniqExact(event_id) FROM coalmine.spans"
        )[0]
        stored = {
            row[0] for row in worker_process.sql("SELECT toString(event_id) FROM coalmine.spans")
        }
        assert (count, unique) == (expected, expected)
        assert stored == acknowledged.ids
        assert worker_process.stop() == 0, worker_process.log_tail()
    publisher.close(5)
