"""``coalmine demo``: the whole pipeline on the embedded defaults, end to end, in one command.

Local Kafka (started unless already running) → a worker on chDB → simulated agents, whose
canary versions are a little worse, for a bounded time → a per-agent/version table from SQL.
Ctrl-C at any point stops what the demo started.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime

from streams import localkafka, sqlcli
from streams.clickhouse import example_query
from streams.generate import GeneratorProgress, TrafficPlan
from streams.generate import run as generate
from streams.localkafka import process
from streams.localkafka.config import parse_local_bootstrap
from streams.settings import Settings
from streams.topics import ensure_topics
from streams.worker_process import WorkerProcess

CATCH_UP_TIMEOUT_S = 60.0


def demo_plan(duration_s: float, rate: float, seed: int) -> TrafficPlan:
    """Three agents; each canary (10% of traffic) fails twice as often, is 30% slower and
    scores 0.05 lower: the table at the end shows it."""
    return TrafficPlan(
        rate=rate,
        duration_s=duration_s,
        canary_share=0.1,
        error_rate=0.02,
        canary_error_rate=0.04,
        canary_latency_factor=1.3,
        canary_quality_delta=-0.05,
        seed=seed,
    )


def run(settings: Settings, *, duration_s: float, rate: float, seed: int) -> int:
    say(f"Coalmine demo: {duration_s:.0f} s of simulated agent traffic at {rate:.0f} requests/s")
    with ExitStack() as cleanup:
        try:
            _run(settings, cleanup, demo_plan(duration_s, rate, seed))
        except KeyboardInterrupt:
            say("\ninterrupted: stopping what the demo started...")
            raise
        say("\nstopping...")
    say("done. Run `coalmine worker` and `coalmine generate` to keep going.")
    return 0


def _run(settings: Settings, cleanup: ExitStack, plan: TrafficPlan) -> None:
    began = datetime.now(UTC)
    host, port = parse_local_bootstrap(settings.kafka_bootstrap)
    if not process.answers(host, port):
        # Detached like `coalmine dev up`, so a Ctrl-C does not kill the broker before the
        # worker has stopped; the demo stops it last.
        localkafka.up(settings)
        cleanup.callback(localkafka.down, settings)
    ensure_topics(settings)
    log_path = settings.home / "demo-worker.log"
    say(f"starting the worker (log: {log_path})...")
    worker = cleanup.enter_context(WorkerProcess(settings, log_path))
    say(f"worker ready; `coalmine sql` answers through {settings.worker_url}")
    # This run's spans only: the embedded database keeps earlier runs' data.
    this_run = f"ingested_at >= toDateTime64('{began:%Y-%m-%d %H:%M:%S}', 3, 'UTC')"

    def stored() -> int:
        return int(worker.scalar(f"SELECT count() FROM coalmine.spans WHERE {this_run}"))

    delivered = _generate(settings, stored, plan)
    _wait_until_stored(stored, delivered)
    query = example_query("version_overview").replace(
        "start_time >= now64() - INTERVAL 1 HOUR", this_run
    )
    columns, rows = sqlcli.fetch(settings, query)
    say("\nper agent and version (sql/queries/version_overview.sql):\n")
    print(sqlcli.render(columns, rows, "table"))


def _generate(settings: Settings, stored: Callable[[], int], plan: TrafficPlan) -> int:
    last_report = [0.0]

    def progress(p: GeneratorProgress) -> None:
        if p.done or p.elapsed_s - last_report[0] >= 5.0:
            last_report[0] = p.elapsed_s
            say(f"{p.line()}  {stored()} stored")

    delivered: list[int] = []

    def record_final(p: GeneratorProgress) -> None:
        progress(p)
        if p.done:
            delivered.append(p.delivered)

    generate(settings, plan, progress=record_final, stop=threading.Event())
    return delivered[-1] if delivered else 0


def _wait_until_stored(stored: Callable[[], int], delivered: int) -> None:
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    count = stored()
    while count < delivered and time.monotonic() < deadline:
        time.sleep(0.5)
        count = stored()
    say(f"{count} of {delivered} delivered spans are stored and queryable")


def say(message: str) -> None:
    print(message, flush=True)
