"""``coalmine bench ingest``: the worker against a raw consume-and-insert loop, same run.

Both sides read the same JSON events from Kafka and insert them into the same ``spans`` table
(each into its own fresh chDB folder). The raw loop is the floor of what any consumer costs
here: confluent-kafka batches, ``json.loads``, a row tuple, one insert per batch, a commit; no
validation, pricing, dead letters or de-duplication. Figures:

* throughput: a backlog of ``events`` is produced first; events/s is the stored count over the
  span of ``ingested_at`` (first row to last), so start-up and group joins are not counted.
* latency, event to queryable: events produced live at ``rate``/s, each with
  ``end_time`` = its produce time; latency = ``ingested_at - end_time`` (rows are queryable
  when the insert returns), as p50/p99.
* aggregation cost: backlog throughput of the worker with windows on (the default) and off
  (``COALMINE_WINDOW_SECONDS=0``), measured on, off, off, on and compared best against best,
  so that a slow spell of the machine does not land on one side only.
* window lag: for each live event, the time from its ``end_time`` to the record of its
  (agent, version, window) on ``coalmine.version-stats`` (the Kafka timestamp of the last
  on-time partial of that window), p50/p99. It is bounded below by the window length and the
  allowed lateness: a window is emitted once it can no longer change.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import islice
from math import isnan, nan
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Consumer, Message, Producer

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


@dataclass(frozen=True)
class Figures:
    name: str
    throughput: float
    latency_p50_ms: float
    latency_p99_ms: float
    window_lag_p50_ms: float = nan
    window_lag_p99_ms: float = nan


LiveEvent = tuple[str, str, datetime]
"""(agent, version, end_time) of an event produced live."""


def run(settings: Settings, *, events: int, rate: float = 2000.0, live_s: float = 15.0) -> int:
    plan = TrafficPlan(rate=rate, seed=11)
    say(f"ingest benchmark: backlog of {events} events, then {live_s:.0f} s live at {rate:.0f}/s")
    with ExitStack() as cleanup, tempfile.TemporaryDirectory(prefix="coalmine-bench-") as tmp:
        local = local_address(settings)
        if local is not None and not process.answers(*local):
            cleanup.enter_context(localkafka.LocalKafka(settings))
        raw = measure_raw(side_settings(settings, Path(tmp), "raw"), plan, events, live_s)
        say(_row(raw))
        worker = measure_worker(side_settings(settings, Path(tmp), "worker"), plan, events, live_s)
        say(_row(worker))
        on_off = {True: [worker.throughput], False: []}
        for run, windows in enumerate((False, False, True)):
            name = f"windows-{'on' if windows else 'off'}-{run}"
            side = side_settings(settings, Path(tmp), name)
            side = side if windows else replace(side, window_seconds=0)
            on_off[windows].append(measure_backlog(side, plan, events))
            say(f"  windows {'on' if windows else 'off'}: {on_off[windows][-1]:,.0f} events/s")
        spans_only = Figures("worker, windows off", max(on_off[False]), nan, nan)
        ceiling = measure_faust_alone(side_settings(settings, Path(tmp), "faust"), plan, events)
        say(_row(ceiling))
    say("")
    say(f"{'':28}{'events/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'window p50':>12}{'p99 ms':>10}")
    for figures in (raw, worker, spans_only, ceiling):
        say(_row(figures))
    say(
        f"{'ratio worker/raw':28}{worker.throughput / raw.throughput:>12.2f}"
        f"{worker.latency_p50_ms / raw.latency_p50_ms:>10.2f}"
        f"{worker.latency_p99_ms / raw.latency_p99_ms:>10.2f}"
    )
    say(f"{'ratio windows on/off':28}{max(on_off[True]) / spans_only.throughput:>12.2f}")
    say(f"{'ratio rows discarded/raw':28}{ceiling.throughput / raw.throughput:>12.2f}")
    say(
        f"window lag: {settings.window_seconds} s windows, "
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


def produce_backlog(settings: Settings, plan: TrafficPlan, count: int) -> None:
    producer = Producer({**client_config(settings), "linger.ms": 20})
    topic = settings.topic(TRACES)
    for i, event in enumerate(events(plan, count)):
        _produce(producer, topic, event.model_dump_json().encode(), str(i))
    producer.flush(60)


def produce_live(settings: Settings, plan: TrafficPlan, duration_s: float) -> list[LiveEvent]:
    """Spans paced at the plan's rate, each stamped ``end_time`` = when it is produced and
    marked with the attribute ``bench=live``."""
    pool = events(replace(plan, seed=plan.seed + 1), int(plan.rate * duration_s))
    producer = Producer({**client_config(settings), "linger.ms": 5})
    topic = settings.topic(TRACES)
    began = time.monotonic()
    sent: list[LiveEvent] = []
    while len(sent) < len(pool):
        due = min(len(pool), int((time.monotonic() - began) * plan.rate))
        for event in pool[len(sent) : due]:
            now = datetime.now(UTC)
            live = event.model_copy(
                update={"start_time": now, "end_time": now, "attributes": {"bench": "live"}}
            )
            _produce(producer, topic, live.model_dump_json().encode(), str(len(sent)))
            sent.append((live.agent, live.version, now))
        time.sleep(0.005)
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


def measure_worker(settings: Settings, plan: TrafficPlan, backlog: int, live_s: float) -> Figures:
    with _worker_after_backlog(settings, plan, backlog) as (worker, throughput):
        live = produce_live(settings, plan, live_s)
        _wait_stored(worker.scalar, "coalmine.spans", backlog + len(live))
        p50, p99 = worker.sql(LATENCY_QUERY)[0]
        time.sleep(settings.window_seconds + settings.allowed_lateness_s + 1.0)
        lag_p50, lag_p99 = window_lag(settings, live)
    return Figures("coalmine worker", throughput, float(p50), float(p99), lag_p50, lag_p99)


def measure_backlog(settings: Settings, plan: TrafficPlan, backlog: int) -> float:
    """Events/s of a worker working off a backlog of ``backlog`` events."""
    with _worker_after_backlog(settings, plan, backlog) as (_, throughput):
        return throughput


@contextmanager
def _worker_after_backlog(
    settings: Settings, plan: TrafficPlan, backlog: int
) -> Iterator[tuple[WorkerProcess, float]]:
    """A worker that has stored a backlog of ``backlog`` events, and its events/s doing so."""
    ensure_topics(settings)
    produce_backlog(settings, plan, backlog)
    with WorkerProcess(settings, settings.chdb_path.parent / "worker.log") as worker:
        stored = _wait_stored(worker.scalar, "coalmine.spans", backlog)
        yield worker, _throughput(lambda q: worker.sql(q)[0], "coalmine.spans", stored)


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


def measure_faust_alone(settings: Settings, plan: TrafficPlan, backlog: int) -> Figures:
    """The worker with a sink that discards rows: Faust plus validation, without ClickHouse."""
    ensure_topics(settings)
    produce_backlog(settings, plan, backlog)
    command = ("streams.devtools.bench.discarding_worker",)
    log = settings.chdb_path.parent / "faust.log"
    with WorkerProcess(settings, log, command=command) as worker:
        first_seen = _poll_written(worker, 1)
        began = time.monotonic()
        done = _poll_written(worker, backlog)
        elapsed = time.monotonic() - began
    return Figures("worker, rows discarded", (done - first_seen) / elapsed, nan, nan)


def _poll_written(worker: WorkerProcess, at_least: int) -> int:
    deadline = time.monotonic() + STORED_TIMEOUT_S
    while time.monotonic() < deadline:
        written = int(worker.health()["spans_written"])
        if written >= at_least:
            return written
        time.sleep(0.05)
    raise TimeoutError(f"fewer than {at_least} events processed after {STORED_TIMEOUT_S} s")


def measure_raw(settings: Settings, plan: TrafficPlan, backlog: int, live_s: float) -> Figures:
    ensure_topics(settings)
    produce_backlog(settings, plan, backlog)
    client = clickhouse.connect(settings)
    clickhouse.migrate(client)
    stop = threading.Event()
    loop = threading.Thread(target=raw_loop, args=(settings, client, stop), daemon=True)
    loop.start()
    try:
        scalar = lambda q: client.query(q).result_rows[0][0]  # noqa: E731
        stored = _wait_stored(scalar, "coalmine.spans", backlog)
        throughput = _throughput(lambda q: client.query(q).result_rows[0], "coalmine.spans", stored)
        sent = len(produce_live(settings, plan, live_s))
        _wait_stored(scalar, "coalmine.spans", backlog + sent)
        p50, p99 = client.query(LATENCY_QUERY).result_rows[0]
    finally:
        stop.set()
        loop.join()
        client.close()
    return Figures("raw consume+insert loop", throughput, float(p50), float(p99))


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
            rows = [_raw_row(m) for m in messages if not m.error()]
            if rows:
                client.insert("coalmine.spans", rows, column_names=clickhouse.SPAN_COLUMNS)
                consumer.commit(asynchronous=False)
    finally:
        consumer.close()


def _raw_row(message: Message) -> tuple[Any, ...]:
    e = json.loads(message.value() or b"")
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
        content_hash(message.value() or b""), message.partition(), message.offset(),
    )  # fmt: skip


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
        f"{f.name:28}{f.throughput:>12,.0f}{_ms(f.latency_p50_ms)}{_ms(f.latency_p99_ms)}"
        f"  {_ms(f.window_lag_p50_ms)}{_ms(f.window_lag_p99_ms)}"
    )


def _ms(value: float) -> str:
    return f"{'-':>10}" if isnan(value) else f"{value:>10.0f}"


def say(message: str) -> None:
    print(message, flush=True)
