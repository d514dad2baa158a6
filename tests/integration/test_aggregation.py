"""Windowed aggregates end to end: SDK → real Kafka → ``coalmine worker`` → chDB and
``coalmine.version-stats``; exact after SIGKILLs, late spans corrected, future spans refused."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from schemas.topics import DLQ_REASON, LATE_HEADER, TRACES_DLQ, VERSION_STATS
from schemas.window_stats import (
    QUANTILE_MAX_RELATIVE_ERROR,
    WindowStats,
    latency_histogram,
    log_cost,
)
from streams.devtools.worker_process import WorkerProcess
from streams.sdk import BatchLimits, KafkaPublisher, Tracer
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.harness import (
    consume_all,
    headers_of,
    isolated_settings,
    killed_mid_stream,
    running_worker,
    wait_for,
)

pytestmark = pytest.mark.integration

WINDOW_S = 2
LATENESS_S = 1.0

# Which spans have a cost: streams/ingest/aggregate.py `is_priced`.
PRICED = (
    "(cost_source = 'reported' "
    "OR (cost_source = 'price_table' AND input_tokens + output_tokens > 0))"
)
# Per (agent, version, window): the aggregate recomputed from the stored spans, with the
# rules of streams/ingest/aggregate.py written again in SQL.
FROM_SPANS = f"""
SELECT agent, version,
       toUnixTimestamp(toStartOfInterval(end_time, toIntervalSecond({WINDOW_S}))) AS w,
       countIf(kind = 'request'),
       countIf(kind = 'request' AND status = 'error'),
       countIf(kind = 'request' AND task_completed IS NOT NULL),
       countIf(kind = 'request' AND task_completed),
       countIf(kind = 'tool'),
       countIf(kind = 'tool' AND status = 'error'),
       countIf(kind = 'llm'),
       countIf(kind = 'guardrail' AND status = 'error'),
       sum(input_tokens),
       sum(output_tokens),
       countIf({PRICED}),
       sum(cost_usd),
       countIf(quality_score IS NOT NULL),
       sum(ifNull(quality_score, 0)),
       sumIf(duration_ms, kind = 'request')
FROM coalmine.spans GROUP BY agent, version, w
"""
FROM_VERSION_STATS = """
SELECT agent, version, toUnixTimestamp(window_start) AS w,
       sum(requests), sum(errors), sum(tasks_attempted), sum(tasks_completed),
       sum(tool_calls), sum(tool_errors), sum(llm_calls), sum(guardrail_blocks),
       sum(input_tokens), sum(output_tokens), sum(cost_count), sum(cost_sum),
       sum(quality_count), sum(quality_sum), sum(latency_sum_ms)
FROM coalmine.version_stats GROUP BY agent, version, w
"""
# Per window: the priced requests' cost totals recomputed from the stored spans, with the
# rule of streams/ingest/aggregate.py: a request's total is the priced cost of its trace's
# spans in its own Kafka message, counted in the window of its (last) request span.
REQUEST_COSTS_FROM_SPANS = f"""
SELECT agent, version,
       toUnixTimestamp(toStartOfInterval(request_end, toIntervalSecond({WINDOW_S}))) AS w,
       count(), sum(total), sum(log(total + 1e-6)), sum(pow(log(total + 1e-6), 2))
FROM (
    SELECT argMaxIf(agent, kafka_index, kind = 'request') AS agent,
           argMaxIf(version, kafka_index, kind = 'request') AS version,
           argMaxIf(end_time, kafka_index, kind = 'request') AS request_end,
           sumIf(cost_usd, {PRICED}) AS total
    FROM coalmine.spans
    GROUP BY kafka_partition, kafka_offset, trace_id
    HAVING countIf(kind = 'request') > 0 AND countIf({PRICED}) > 0
)
GROUP BY agent, version, w
"""
REQUEST_COSTS_FROM_VERSION_STATS = """
SELECT agent, version, toUnixTimestamp(window_start) AS w,
       sum(request_cost_count), sum(request_cost_sum), sum(request_log_cost_sum),
       sum(request_log_cost_sumsq)
FROM coalmine.version_stats GROUP BY agent, version, w
"""
REQUEST_MEASURES = [
    "request_cost_count",
    "request_cost_sum",
    "request_log_cost_sum",
    "request_log_cost_sumsq",
]
MEASURES = [
    "requests",
    "errors",
    "tasks_attempted",
    "tasks_completed",
    "tool_calls",
    "tool_errors",
    "llm_calls",
    "guardrail_blocks",
    "input_tokens",
    "output_tokens",
    "cost_count",
    "cost_sum",
    "quality_count",
    "quality_sum",
    "latency_sum_ms",
]


def windowed_settings(base: Settings, tmp_path: Path) -> Settings:
    return replace(
        isolated_settings(base, tmp_path),
        window_seconds=WINDOW_S,
        allowed_lateness_s=LATENESS_S,
    )


@pytest.fixture
def windowed_worker(kafka_settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    settings = windowed_settings(kafka_settings, tmp_path)
    with running_worker(settings, tmp_path / "worker.log") as worker:
        yield worker


Window = tuple[str, str, int]


def by_window(rows: list[Any], measures: list[str] = MEASURES) -> dict[Window, dict[str, float]]:
    return {
        (agent, version, int(w)): dict(zip(measures, map(float, values), strict=True))
        for agent, version, w, *values in rows
    }


def assert_aggregates_match_the_spans(worker: WorkerProcess) -> dict[str, float]:
    """Every window's measures, per span and per request, against the spans; returns the
    totals over all windows."""
    expected = by_window(worker.sql(FROM_SPANS))
    stored = by_window(worker.sql(FROM_VERSION_STATS))
    assert stored.keys() == expected.keys()
    for key, measures in expected.items():
        for name, value in measures.items():
            # quality_score is stored as Float32: its sum over spans differs in the 7th digit
            assert stored[key][name] == pytest.approx(value, rel=1e-6, abs=1e-9), (key, name)
    per_request = by_window(worker.sql(REQUEST_COSTS_FROM_SPANS), REQUEST_MEASURES)
    stored_per_request = by_window(worker.sql(REQUEST_COSTS_FROM_VERSION_STATS), REQUEST_MEASURES)
    assert per_request.keys() <= stored_per_request.keys()
    none = dict.fromkeys(REQUEST_MEASURES, 0.0)
    for key, measures in stored_per_request.items():
        for name, value in per_request.get(key, none).items():
            assert measures[name] == pytest.approx(value, rel=1e-9, abs=1e-9), (key, name)
    durations: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for agent, version, w, duration in worker.sql(
        f"SELECT agent, version, toUnixTimestamp(toStartOfInterval(end_time, "
        f"toIntervalSecond({WINDOW_S}))), duration_ms FROM coalmine.spans WHERE kind = 'request'"
    ):
        durations[(agent, version, int(w))].append(float(duration))
    histograms = worker.sql(
        "SELECT agent, version, toUnixTimestamp(window_start), sumForEach(latency_buckets) "
        "FROM coalmine.version_stats GROUP BY agent, version, window_start"
    )
    for agent, version, w, buckets in histograms:
        assert list(buckets) == latency_histogram(durations[(agent, version, int(w))])
    windows = [*stored.values(), *stored_per_request.values()]
    return {name: sum(w.get(name, 0.0) for w in windows) for name in [*MEASURES, *REQUEST_MEASURES]}


def traced_stream(tracer: Tracer, rng: random.Random, count: int) -> None:
    """``count`` tasks with explicit timings: a request with an llm and a tool call, some of
    them failing, an eval now and then; end times around now, a few a little behind."""
    for _ in range(count):
        end = datetime.now(UTC) - timedelta(seconds=rng.choice([0.0, 0.0, 0.0, 1.5, 4.0]))
        start = end - timedelta(milliseconds=rng.lognormvariate(6.0, 0.8))
        with tracer.request("answer", start_time=start) as request:
            llm = request.llm("draft", provider="openai", model="gpt-4o-mini", start_time=start)
            llm.set_usage(
                input_tokens=rng.randint(50, 900),
                output_tokens=rng.randint(5, 90),
                cost_usd=rng.choice([None, round(rng.uniform(0.0001, 0.01), 6)]),
            )
            llm.end(end_time=start + (end - start) / 2)
            if rng.random() < 0.05:  # the agent loops: sometimes past what a message holds
                for _ in range(rng.randint(2, 60)):
                    again = request.llm(
                        "retry", provider="openai", model="gpt-4o-mini", start_time=start
                    )
                    again.set_usage(input_tokens=rng.randint(50, 900), output_tokens=9)
                    again.end(end_time=start + (end - start) / 2)
            tool = request.tool("search", tool_name="web_search", start_time=start)
            if rng.random() < 0.1:
                tool.set_error("TimeoutError", "search timed out")
            tool.end(end_time=end)
            if rng.random() < 0.3:
                judge = request.eval("judge", start_time=start)
                judge.set_outcome(quality_score=round(rng.random(), 3))
                judge.end(end_time=end)
            if rng.random() < 0.05:
                request.set_error("AgentError", "gave up")
            request.set_outcome(task_completed=rng.random() < 0.8)
            request.end(end_time=end)


@pytest.mark.parametrize("spans_per_message", [1, 50], ids=["single", "batched"])
def test_window_aggregates_equal_the_spans_after_sigkills(
    kafka_settings: Settings, tmp_path: Path, spans_per_message: int
) -> None:
    """Batched: a message's spans fall in several windows (stragglers, cross-request
    batches), so its acknowledgement waits for the rows of all of them; a request's spans
    come together, but a looping one's spans beyond a message go in earlier messages. One
    span per message: no request's spans arrive with it, so none has a cost total."""
    settings = windowed_settings(kafka_settings, tmp_path)
    ensure_topics(settings)
    publisher = KafkaPublisher.from_settings(
        settings, batch=BatchLimits(max_spans=spans_per_message)
    )
    tracers = [Tracer("research-agent", version, publisher) for version in ("v7", "v8")]
    stream_rng = random.Random(7)

    def produce() -> None:
        for tracer in tracers:
            traced_stream(tracer, stream_rng, 15)

    log = tmp_path / "worker.log"
    with killed_mid_stream(settings, log, produce, kills=4, seed=4242) as worker:
        assert publisher.flush(30) == 0
        sent = publisher.stats.delivered
        assert sent > 2000 and publisher.stats.failed == 0

        assert wait_for(worker, "SELECT count() FROM coalmine.spans", sent, timeout_s=180) == sent
        requests = worker.scalar("SELECT countIf(kind = 'request') FROM coalmine.spans")
        counted = "SELECT sum(requests) FROM coalmine.version_stats"
        assert wait_for(worker, counted, requests, timeout_s=60) == requests
        totals = assert_aggregates_match_the_spans(worker)
        if spans_per_message == 1:
            assert totals["request_cost_count"] == 0
        else:
            assert 0 < totals["request_cost_count"] <= requests
            assert totals["request_cost_sum"] < totals["cost_sum"]  # the loops' first spans
        assert worker.scalar("SELECT countIf(late) FROM coalmine.version_stats") > 0
        assert worker.stop() == 0, worker.log_tail()
    publisher.close(5)


def send_known_traffic(
    tracer: Tracer, rng: random.Random, requests: int, error_rate: float
) -> dict[str, list[Any]]:
    """``requests`` tasks through the SDK; returns what was sent, per request measure."""
    facts: dict[str, list[Any]] = defaultdict(list)
    for _ in range(requests):
        end = datetime.now(UTC) - timedelta(seconds=rng.uniform(0.0, 3.0))
        start = end - timedelta(milliseconds=rng.lognormvariate(6.5, 1.0))
        request = tracer.request("answer", start_time=start)
        llm = request.llm("draft", provider="openai", model="gpt-4o", start_time=start)
        cost, tokens = round(rng.uniform(0.001, 0.05), 6), (rng.randint(100, 2000), 80)
        llm.set_usage(input_tokens=tokens[0], output_tokens=tokens[1], cost_usd=cost)
        llm.end(end_time=end)
        tool = request.tool("lookup", tool_name="lookup_order", start_time=start)
        tool_failed = rng.random() < 0.1
        if tool_failed:
            tool.set_error("NotFound")
        tool.end(end_time=end)
        failed = rng.random() < error_rate
        if failed:
            request.set_error("AgentError", "gave up")
        completed = rng.random() < 0.8 if rng.random() < 0.9 else None
        quality = round(rng.random(), 3) if rng.random() < 0.7 else None
        request.set_outcome(task_completed=completed, quality_score=quality)
        request.end(end_time=end)
        facts["latency_ms"].append((end - start).total_seconds() * 1000)
        facts["error"].append(failed)
        facts["cost"].append(cost)
        facts["tokens"].append(sum(tokens))
        facts["tool_error"].append(tool_failed)
        facts["completed"].extend([] if completed is None else [completed])
        facts["quality"].extend([] if quality is None else [quality])
    return facts


def test_version_summary_equals_the_traffic_the_sdk_sent(windowed_worker: WorkerProcess) -> None:
    publisher = KafkaPublisher.from_settings(windowed_worker.settings)
    rng = random.Random(99)
    began = datetime.now(UTC)
    sent = {
        version: send_known_traffic(Tracer("support-bot", version, publisher), rng, n, rate)
        for version, n, rate in (("v1", 300, 0.05), ("v2", 150, 0.15))
    }
    assert publisher.flush(30) == 0
    counted = "SELECT sum(requests) FROM coalmine.version_stats"
    assert wait_for(windowed_worker, counted, 450, timeout_s=60) == 450

    since = (began - timedelta(seconds=10)).strftime("%Y-%m-%d %H:%M:%S")
    until = (datetime.now(UTC) + timedelta(minutes=1)).strftime("%Y-%m-%d %H:%M:%S")
    columns = (
        "version, requests, errors, error_rate, latency_p50_ms, latency_p95_ms, "
        "latency_p99_ms, cost_per_request_usd, tokens_per_request, quality_mean, "
        "task_completion_rate, tool_error_rate, llm_calls, tool_calls"
    )
    summary = windowed_worker.sql(
        f"SELECT {columns} FROM coalmine.version_summary(since = '{since}', until = '{until}') "
        "WHERE agent = 'support-bot' ORDER BY version"
    )
    assert [row[0] for row in summary] == ["v1", "v2"]
    for version, *got in summary:
        facts = sent[version]
        n = len(facts["latency_ms"])
        row = dict(zip(columns.split(", ")[1:], got, strict=True))
        assert (row["requests"], row["errors"]) == (n, sum(facts["error"]))
        assert (row["llm_calls"], row["tool_calls"]) == (n, n)
        exact = {
            "error_rate": sum(facts["error"]) / n,
            "cost_per_request_usd": sum(facts["cost"]) / n,
            "tokens_per_request": sum(facts["tokens"]) / n,
            "quality_mean": sum(facts["quality"]) / len(facts["quality"]),
            "task_completion_rate": sum(facts["completed"]) / len(facts["completed"]),
            "tool_error_rate": sum(facts["tool_error"]) / n,
        }
        for name, value in exact.items():
            assert row[name] == pytest.approx(value, rel=1e-9), (version, name)
        for q in (0.50, 0.95, 0.99):
            true = float(np.quantile(facts["latency_ms"], q, method="inverted_cdf"))
            estimate = row[f"latency_p{round(q * 100)}_ms"]
            assert abs(estimate / true - 1) <= QUANTILE_MAX_RELATIVE_ERROR, (version, q)
    # The SDK sends each request's spans together: every request is priced with its one llm
    # call, and the judge's cost per request agrees with the summary's.
    per_request = windowed_worker.sql(
        "SELECT version, sum(request_cost_count), sum(request_cost_sum), "
        "sum(request_log_cost_sum) FROM coalmine.version_stats WHERE agent = 'support-bot' "
        "GROUP BY version ORDER BY version"
    )
    cost_column = columns.split(", ").index("cost_per_request_usd")
    summary_cost = {row[0]: row[cost_column] for row in summary}
    for version, count, total, log_total in per_request:
        costs = sent[version]["cost"]
        assert count == len(costs)
        assert total == pytest.approx(sum(costs), rel=1e-9)
        assert log_total == pytest.approx(sum(log_cost(c) for c in costs), rel=1e-9)
        assert summary_cost[version] == pytest.approx(total / count, rel=1e-9)
    publisher.close(5)


def published_windows(settings: Settings, expected: int) -> list[tuple[WindowStats, bool]]:
    records = consume_all(settings.kafka_bootstrap, settings.topic(VERSION_STATS), expected)
    return [
        (WindowStats.model_validate_json(r.value() or b""), headers_of(r)[LATE_HEADER] == b"1")
        for r in records
    ]


def test_a_span_after_its_window_was_emitted_is_counted_in_a_correction_row(
    windowed_worker: WorkerProcess,
) -> None:
    settings = windowed_worker.settings
    publisher = KafkaPublisher.from_settings(settings)
    tracer = Tracer("support-bot", "v3", publisher)
    # One trace id, so one partition: one partial row per window.
    trace = "5" * 32

    def request(start: datetime, end: datetime) -> None:
        tracer.request("answer", start_time=start, trace_id=trace).end(end_time=end)

    # A few seconds ahead (within the clock skew allowed): on a loaded machine the first two
    # must still find their window open, or they are corrections themselves.
    end = datetime.now(UTC) + timedelta(seconds=4)
    for _ in range(2):
        request(end - timedelta(milliseconds=300), end)
    assert publisher.flush(10) == 0
    rows = "SELECT count() FROM coalmine.version_stats"
    assert wait_for(windowed_worker, rows, 1, timeout_s=30) == 1

    # The window is emitted; a straggler for it, and one from an hour ago.
    request(end - timedelta(seconds=1), end)
    old = end - timedelta(hours=1)
    request(old - timedelta(seconds=2), old)
    assert publisher.flush(10) == 0
    assert wait_for(windowed_worker, rows, 3, timeout_s=30) == 3

    stored = windowed_worker.sql(
        "SELECT toUnixTimestamp(window_start), late, requests FROM coalmine.version_stats"
    )
    window = int(end.timestamp()) // WINDOW_S * WINDOW_S
    old_window = int(old.timestamp()) // WINDOW_S * WINDOW_S
    assert sorted((w, bool(late), n) for w, late, n in stored) == [
        (old_window, True, 1),
        (window, False, 2),
        (window, True, 1),
    ]
    published = published_windows(settings, 3)
    assert sorted(
        (int(stats.window_start.timestamp()), late, stats.requests) for stats, late in published
    ) == sorted((w, bool(late), n) for w, late, n in stored)
    assert len({stats.source for stats, _ in published}) == 3
    assert windowed_worker.scalar("SELECT count() FROM coalmine.spans") == 4
    publisher.close(5)


def test_a_span_from_beyond_the_clock_skew_bound_is_dead_lettered(
    windowed_worker: WorkerProcess,
) -> None:
    settings = windowed_worker.settings
    publisher = KafkaPublisher.from_settings(settings)
    tracer = Tracer("support-bot", "v3", publisher)
    now = datetime.now(UTC)
    future = now + timedelta(seconds=settings.max_clock_skew_s + 600)
    tracer.request("answer", start_time=future - timedelta(seconds=1)).end(end_time=future)
    tracer.request("answer", start_time=now - timedelta(seconds=1)).end(end_time=now)
    assert publisher.flush(10) == 0

    (dead,) = consume_all(settings.kafka_bootstrap, settings.topic(TRACES_DLQ), 1)
    assert json.loads(dead.value() or b"")["end_time"].startswith(future.isoformat()[:19])
    assert b"beyond the allowed clock skew" in headers_of(dead)[DLQ_REASON]
    counted = "SELECT sum(requests) FROM coalmine.version_stats"
    assert wait_for(windowed_worker, counted, 1, timeout_s=30) == 1
    assert windowed_worker.scalar("SELECT count() FROM coalmine.spans") == 1
    publisher.close(5)
