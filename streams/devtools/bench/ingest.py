"""``coalmine bench ingest``: the worker against a raw consume-and-insert loop on the same
messages, same run, for messages of 1, 5 and 50 spans (``--spans-per-message``).

Both sides read the same JSON spans from Kafka and insert them into the same ``spans`` table
(each into its own fresh chDB folder). The raw loop is the floor of what any consumer costs
here: confluent-kafka batches, a split at newlines, ``json.loads``, a row tuple, one insert per
batch, a commit; no validation, pricing, windows, dead letters or de-duplication. For each
message size the sides run alternated A B B A (raw, worker, worker, raw), so that a slow
spell of the machine (shared with other work) falls on both, and best is compared with best.
Figures:

* throughput: a backlog of ``events`` spans is produced first; spans/s is the stored count
  over the span of ``ingested_at`` (first row to last), so start-up and group joins are not
  counted.
* CPU µs per span: CPU time of the consuming process (the worker, or the benchmark process
  for the raw loop; both hold chDB inside) while it works off the backlog, per span stored.
* latency, event to queryable (first run of each side): spans produced live at ``rate``/s,
  each with ``end_time`` = when it is made, gathered into messages of the size measured (a
  message leaves when it is full, or 5 ms after its first span, as the SDK's linger);
  latency = ``ingested_at - end_time`` (rows are queryable when the insert returns), p50/p99.
* window lag (worker): for each live span, the time from its ``end_time`` to the record of its
  (agent, version, window) on ``coalmine.version-stats``, p50/p99. It is bounded below by the
  window length and the allowed lateness: a window is emitted once it can no longer change.
* ``--breakdown`` adds, per size, the worker with windows off and with a sink that discards
  rows (Faust plus validation, without ClickHouse).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import islice
from math import isnan, nan
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Consumer, Message, Producer

from schemas.framing import SEPARATOR, join_spans
from schemas.topics import LATE_HEADER, TRACES, VERSION_STATS
from schemas.trace import TraceEvent
from schemas.window_stats import WindowStats
from streams.devtools import localkafka
from streams.devtools.generate import TrafficPlan, simulate
from streams.devtools.localkafka import process
from streams.devtools.localkafka.config import local_address
from streams.devtools.worker_process import WorkerProcess
from streams.ingest.aggregate import window_start_of
from streams.ingest.route import content_hash
from streams.sdk.kafka_security import client_config
from streams.settings import Settings
from streams.storage import clickhouse
from streams.topics import ensure_topics

STORED_TIMEOUT_S = 300.0
RAW_BATCH = 2000
LIVE_LINGER_S = 0.005
SPANS_PER_MESSAGE = (1, 5, 50)


@dataclass(frozen=True)
class Figures:
    name: str
    throughput: float
    latency_p50_ms: float = nan
    latency_p99_ms: float = nan
    window_lag_p50_ms: float = nan
    window_lag_p99_ms: float = nan
    cpu_us_per_span: float = nan


def best(runs: Sequence[Figures]) -> Figures:
    """The fastest run, with the latency of the run that measured it."""
    fastest = max(runs, key=lambda f: f.throughput)
    timed = next((f for f in runs if not isnan(f.latency_p50_ms)), fastest)
    return replace(
        timed,
        throughput=fastest.throughput,
        cpu_us_per_span=min(f.cpu_us_per_span for f in runs),
    )


LiveEvent = tuple[str, str, datetime]
"""(agent, version, end_time) of an event produced live."""


@dataclass(frozen=True)
class Run:
    """One side of one comparison: how the backlog is laid out and what consumes it."""

    settings: Settings
    plan: TrafficPlan
    backlog: int
    spans_per_message: int
    live_s: float = 0.0
    """Seconds of live traffic after the backlog (0: none, no latency figures)."""


def run(
    settings: Settings,
    *,
    events: int,
    spans_per_message: Sequence[int] = SPANS_PER_MESSAGE,
    breakdown: bool = False,
    rate: float = 2000.0,
    live_s: float = 15.0,
) -> int:
    plan = TrafficPlan(rate=rate, seed=11)
    say(
        f"ingest benchmark: backlog of {events} spans in messages of "
        f"{', '.join(map(str, spans_per_message))} span(s), then {live_s:.0f} s live at "
        f"{rate:.0f}/s; raw loop and worker alternated A B B A"
    )
    summary: list[tuple[int, Figures, Figures]] = []
    with ExitStack() as cleanup, tempfile.TemporaryDirectory(prefix="coalmine-bench-") as tmp:
        local = local_address(settings)
        if local is not None and not process.answers(*local):
            cleanup.enter_context(localkafka.LocalKafka(settings))
        for size in spans_per_message:
            say(f"{size} span(s) per message:")
            sides: dict[str, list[Figures]] = {"raw": [], "worker": []}
            for order, side in enumerate(("raw", "worker", "worker", "raw")):
                side_run = Run(
                    side_settings(settings, Path(tmp), f"{side}-{size}-{order}"),
                    plan,
                    events,
                    size,
                    live_s if order < 2 else 0.0,
                )
                figures = measure_raw(side_run) if side == "raw" else measure_worker(side_run)
                sides[side].append(figures)
                say(_row(figures))
            if breakdown:
                off = replace(side_settings(settings, Path(tmp), f"off-{size}"), window_seconds=0)
                say(
                    _row(
                        replace(measure_worker(Run(off, plan, events, size)), name="  windows off")
                    )
                )
                faust = Run(side_settings(settings, Path(tmp), f"faust-{size}"), plan, events, size)
                say(_row(measure_faust_alone(faust)))
            summary.append((size, best(sides["raw"]), best(sides["worker"])))
    say("")
    say(
        f"{'spans/msg':>9}  {'':24}{'spans/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'win p50':>9}{'p99 ms':>9}{'CPU us/span':>13}"
    )
    for size, raw, worker in summary:
        say(f"{size:>9}  {_row(raw)}")
        say(f"{'':>9}  {_row(worker)}")
        say(f"{'':>9}  {'ratio worker/raw':24}{worker.throughput / raw.throughput:>10.2f}")
    say(
        f"best of two runs each; window lag: {settings.window_seconds} s windows, "
        f"{settings.allowed_lateness_s:g} s allowed lateness"
    )
    return 0


def side_settings(settings: Settings, tmp: Path, side: str) -> Settings:
    stamp = datetime.now(UTC).strftime("%H%M%S")
    return replace(
        settings,
        topic_prefix=f"bench-{side}-{stamp}",
        clickhouse_url=f"chdb://{tmp / side}",
        worker_port=localkafka.free_loopback_port(),
    )


def events(plan: TrafficPlan, count: int) -> list[TraceEvent]:
    """``count`` simulated spans (a request and its children count one each), all ended
    before now: spans from the future would be dead-lettered."""
    start = datetime.now(UTC) - timedelta(seconds=count / plan.rate + 60.0)
    return list(islice(simulate(plan, start, count), count))


def produce_backlog(run: Run) -> None:
    """The backlog: ``run.backlog`` spans, ``run.spans_per_message`` to a message."""
    producer = Producer({**client_config(run.settings), "linger.ms": 20})
    topic = run.settings.topic(TRACES)
    values = [event.model_dump_json().encode() for event in events(run.plan, run.backlog)]
    size = run.spans_per_message
    for i in range(0, len(values), size):
        _produce(producer, topic, join_spans(values[i : i + size]), str(i))
    producer.flush(60)


def produce_live(run: Run) -> list[LiveEvent]:
    """Spans paced at the plan's rate, each stamped ``end_time`` = when it is made and marked
    with the attribute ``bench=live``, sent in messages of ``run.spans_per_message`` (a
    message leaves when full, or :data:`LIVE_LINGER_S` after its first span)."""
    pool = events(replace(run.plan, seed=run.plan.seed + 1), int(run.plan.rate * run.live_s))
    producer = Producer({**client_config(run.settings), "linger.ms": 5})
    topic = run.settings.topic(TRACES)
    began = time.monotonic()
    sent: list[LiveEvent] = []
    waiting: list[bytes] = []
    first_waiting = 0.0
    while len(sent) < len(pool):
        due = min(len(pool), int((time.monotonic() - began) * run.plan.rate))
        for event in pool[len(sent) : due]:
            now = datetime.now(UTC)
            live = event.model_copy(
                update={"start_time": now, "end_time": now, "attributes": {"bench": "live"}}
            )
            if not waiting:
                first_waiting = time.monotonic()
            waiting.append(live.model_dump_json().encode())
            sent.append((live.agent, live.version, now))
            if len(waiting) == run.spans_per_message:
                _produce(producer, topic, join_spans(waiting), str(len(sent)))
                waiting = []
        if waiting and time.monotonic() - first_waiting >= LIVE_LINGER_S:
            _produce(producer, topic, join_spans(waiting), str(len(sent)))
            waiting = []
        time.sleep(0.001)
    if waiting:
        _produce(producer, topic, join_spans(waiting), str(len(sent)))
    producer.flush(60)
    return sent


def _produce(producer: Producer, topic: str, value: bytes, key: str) -> None:
    while True:
        try:
            producer.produce(topic, value, key=key)
            producer.poll(0)
            return
        except BufferError:
            producer.poll(0.1)


def measure_worker(run: Run) -> Figures:
    settings = run.settings
    with _worker_after_backlog(run) as (worker, throughput, cpu_us):
        if not run.live_s:
            return Figures("coalmine worker", throughput, cpu_us_per_span=cpu_us)
        live = produce_live(run)
        _wait_stored(worker.scalar, "coalmine.spans", run.backlog + len(live))
        p50, p99 = worker.sql(LATENCY_QUERY)[0]
        time.sleep(settings.window_seconds + settings.allowed_lateness_s + 1.0)
        lag_p50, lag_p99 = window_lag(settings, live)
    return Figures("coalmine worker", throughput, float(p50), float(p99), lag_p50, lag_p99, cpu_us)


@contextmanager
def _worker_after_backlog(run: Run) -> Iterator[tuple[WorkerProcess, float, float]]:
    """A worker that has stored a backlog, its spans/s and CPU µs per span doing so."""
    settings = run.settings
    ensure_topics(settings)
    produce_backlog(run)
    with WorkerProcess(settings, settings.chdb_path.parent / "worker.log") as worker:
        stored, cpu_us = _drain(worker.scalar, run.backlog, worker.cpu_seconds)
        yield worker, _throughput(lambda q: worker.sql(q)[0], "coalmine.spans", stored), cpu_us


def window_lag(settings: Settings, live: list[LiveEvent]) -> tuple[float, float]:
    """p50/p99 ms from each live event's end to its window's record on the topic."""
    emitted: dict[tuple[str, str, int], float] = {}
    for message in _read_all(settings, settings.topic(VERSION_STATS)):
        if dict(message.headers() or []).get(LATE_HEADER) == b"1":
            continue
        stats = WindowStats.model_validate_json(message.value() or b"")
        key = (stats.agent, stats.version, int(stats.window_start.timestamp()))
        emitted[key] = max(emitted.get(key, 0.0), float(message.timestamp()[1]))
    lags = [
        emitted[key] - end.timestamp() * 1000
        for agent, version, end in live
        if (key := (agent, version, window_start_of(end, settings.window_seconds))) in emitted
    ]
    if len(lags) < len(live):
        say(f"  {len(live) - len(lags)} live events had no on-time window record")
    p50, p99 = np.quantile(lags, [0.5, 0.99]) if lags else (nan, nan)
    return float(p50), float(p99)


def _read_all(settings: Settings, topic: str, idle_s: float = 3.0) -> list[Message]:
    """Every record of ``topic``, read until nothing new arrives for ``idle_s``."""
    consumer = Consumer(
        {
            **client_config(settings),
            "group.id": f"{settings.consumer_group}-bench-reader",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    records: list[Message] = []
    try:
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < idle_s:
            batch = [m for m in consumer.consume(1000, timeout=0.5) if not m.error()]
            if batch:
                records.extend(batch)
                idle_since = time.monotonic()
    finally:
        consumer.close()
    return records


def measure_faust_alone(run: Run) -> Figures:
    """The worker with a sink that discards rows: Faust plus validation, without ClickHouse."""
    settings = run.settings
    ensure_topics(settings)
    produce_backlog(run)
    command = ("streams.devtools.bench.discarding_worker",)
    log = settings.chdb_path.parent / "faust.log"
    with WorkerProcess(settings, log, command=command) as worker:
        first_seen = _poll_written(worker, 1)
        began, cpu_began = time.monotonic(), worker.cpu_seconds()
        done = _poll_written(worker, run.backlog)
        elapsed, cpu = time.monotonic() - began, worker.cpu_seconds() - cpu_began
    spans = max(1, done - first_seen)
    return Figures("  rows discarded", spans / elapsed, cpu_us_per_span=cpu * 1e6 / spans)


def _poll_written(worker: WorkerProcess, at_least: int) -> int:
    deadline = time.monotonic() + STORED_TIMEOUT_S
    while time.monotonic() < deadline:
        written = int(worker.health()["spans_written"])
        if written >= at_least:
            return written
        time.sleep(0.05)
    raise TimeoutError(f"fewer than {at_least} events processed after {STORED_TIMEOUT_S} s")


def measure_raw(run: Run) -> Figures:
    settings = run.settings
    ensure_topics(settings)
    produce_backlog(run)
    client = clickhouse.connect(settings)
    clickhouse.migrate(client)
    stop = threading.Event()
    loop = threading.Thread(target=raw_loop, args=(settings, client, stop), daemon=True)
    loop.start()
    try:
        scalar = lambda q: client.query(q).result_rows[0][0]  # noqa: E731
        stored, cpu_us = _drain(scalar, run.backlog, _own_cpu_seconds)
        throughput = _throughput(lambda q: client.query(q).result_rows[0], "coalmine.spans", stored)
        if not run.live_s:
            return Figures("raw consume+insert loop", throughput, cpu_us_per_span=cpu_us)
        sent = len(produce_live(run))
        _wait_stored(scalar, "coalmine.spans", run.backlog + sent)
        p50, p99 = client.query(LATENCY_QUERY).result_rows[0]
    finally:
        stop.set()
        loop.join()
        client.close()
    return Figures(
        "raw consume+insert loop", throughput, float(p50), float(p99), cpu_us_per_span=cpu_us
    )


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def raw_loop(settings: Settings, client: Any, stop: threading.Event) -> None:
    """The baseline: consume a batch, parse, insert, commit. Nothing else."""
    consumer = Consumer(
        {
            **client_config(settings),
            "group.id": settings.consumer_group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([settings.topic(TRACES)])
    try:
        while not stop.is_set():
            messages = consumer.consume(RAW_BATCH, timeout=settings.batch_max_seconds)
            rows = [row for m in messages if not m.error() for row in _raw_rows(m)]
            for start in range(0, len(rows), RAW_BATCH):  # inserts the size the worker makes
                chunk = rows[start : start + RAW_BATCH]
                client.insert("coalmine.spans", chunk, column_names=clickhouse.SPAN_COLUMNS)
            if rows:
                consumer.commit(asynchronous=False)
    finally:
        consumer.close()


def _raw_rows(message: Message) -> list[tuple[Any, ...]]:
    partition, offset = message.partition() or 0, message.offset() or 0
    lines = (message.value() or b"").split(SEPARATOR)
    return [_raw_row(line, partition, offset, index) for index, line in enumerate(lines)]


def _raw_row(value: bytes, partition: int, offset: int, index: int) -> tuple[Any, ...]:
    e = json.loads(value)
    start = datetime.fromisoformat(e["start_time"])
    end = datetime.fromisoformat(e["end_time"])
    return (
        e["event_id"], e["trace_id"], e["span_id"], e.get("parent_span_id") or "",
        e["agent"], e["version"], e["environment"], e.get("tenant") or "", e["kind"], e["name"],
        start, end, (end - start).total_seconds() * 1000, e["status"], e.get("error_type") or "",
        e.get("error_message") or "", e.get("provider") or "", e.get("model") or "",
        e["input_tokens"], e["output_tokens"], e["cached_input_tokens"], e["reasoning_tokens"],
        e.get("cost_usd") or 0.0, "reported",
        e.get("tool_name") or "", e.get("task_completed"), e.get("quality_score"),
        {k: str(v) for k, v in e.get("attributes", {}).items()},
        content_hash(value), partition, offset, index,
    )  # fmt: skip


def _drain(
    scalar: Callable[[str], Any], expected: int, cpu_seconds: Callable[[], float]
) -> tuple[int, float]:
    """Wait for ``expected`` stored spans; returns the count and the CPU µs per span spent
    from the first stored span to the last."""
    deadline = time.monotonic() + STORED_TIMEOUT_S
    first: tuple[int, float] | None = None
    count = 0
    while time.monotonic() < deadline:
        count = int(scalar("SELECT count() FROM coalmine.spans"))
        if count and first is None:
            first = (count, cpu_seconds())
        if count >= expected:
            assert first is not None
            spans = count - first[0]
            return count, (cpu_seconds() - first[1]) * 1e6 / spans if spans else nan
        time.sleep(0.2)
    raise TimeoutError(f"only {count} of {expected} spans stored after {STORED_TIMEOUT_S} s")


def _wait_stored(scalar: Callable[[str], Any], table: str, expected: int) -> int:
    deadline = time.monotonic() + STORED_TIMEOUT_S
    count = 0
    while time.monotonic() < deadline:
        count = int(scalar(f"SELECT count() FROM {table}"))
        if count >= expected:
            return count
        time.sleep(0.2)
    raise TimeoutError(f"only {count} of {expected} events stored after {STORED_TIMEOUT_S} s")


def _throughput(row: Callable[[str], Any], table: str, stored: int) -> float:
    span_s = float(
        row(f"SELECT dateDiff('millisecond', min(ingested_at), max(ingested_at)) FROM {table}")[0]
    )
    return stored / max(span_s / 1000.0, 1e-3)


LATENCY_QUERY = (
    "SELECT quantileExact(0.5)(ms), quantileExact(0.99)(ms) FROM ("
    "SELECT dateDiff('millisecond', end_time, ingested_at) AS ms FROM coalmine.spans "
    "WHERE attributes['bench'] = 'live')"
)


def _row(f: Figures) -> str:
    return (
        f"{f.name:24}{f.throughput:>10,.0f}{_ms(f.latency_p50_ms)}{_ms(f.latency_p99_ms)}"
        f"{_ms(f.window_lag_p50_ms)}{_ms(f.window_lag_p99_ms)}{_ms(f.cpu_us_per_span, 13)}"
    )


def _ms(value: float, width: int = 9) -> str:
    return f"{'-':>{width}}" if isnan(value) else f"{value:>{width}.0f}"


def say(message: str) -> None:
    print(message, flush=True)
