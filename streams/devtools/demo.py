"""``coalmine demo``: the whole pipeline on the embedded defaults, end to end, in one command.

Local Kafka (started unless already running) → a worker on chDB → simulated agents, whose
canary versions are a little worse, for a bounded time → the per-agent/version summary of the
window aggregates.
Ctrl-C at any point stops what the demo started.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

from streams import sqlcli
from streams.devtools import localkafka
from streams.devtools.generate import GeneratorProgress, TrafficPlan
from streams.devtools.generate import run as generate
from streams.devtools.localkafka import process
from streams.devtools.localkafka.config import local_address
from streams.devtools.worker_process import WorkerProcess
from streams.settings import Settings
from streams.topics import ensure_topics

CATCH_UP_TIMEOUT_S = 60.0
SUMMARY_QUERY = """
SELECT agent, version, requests, round(error_rate, 4) AS error_rate,
       round(latency_p50_ms) AS p50_ms, round(latency_p95_ms) AS p95_ms,
       round(latency_p99_ms) AS p99_ms, round(cost_per_request_usd, 5) AS cost_per_request,
       round(quality_mean, 3) AS quality, round(task_completion_rate, 3) AS completion,
       round(tool_error_rate, 3) AS tool_errors
FROM coalmine.version_summary(since = '{since}', until = now() + INTERVAL 1 MINUTE)
ORDER BY agent, version
"""


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
    local = local_address(settings)
    if local is not None and not process.answers(*local):
        # Detached like `coalmine dev up`, so a Ctrl-C does not kill the broker before the
        # worker has stopped; the demo stops it last.
        localkafka.up(settings)
        cleanup.callback(localkafka.down, settings)
    ensure_topics(settings)
    log_path = settings.home / "demo-worker.log"
    say(f"starting the worker (log: {log_path})...")
    worker = cleanup.enter_context(WorkerProcess(settings, log_path))
    say(f"worker ready; `coalmine sql` answers through {settings.worker_url}")
    # This run's rows only: the embedded database keeps earlier runs' data.
    this_run = f"ingested_at >= toDateTime64('{began:%Y-%m-%d %H:%M:%S}', 3, 'UTC')"
    emitted_this_run = this_run.replace("ingested_at", "emitted_at")

    def stored() -> int:
        return int(worker.scalar(f"SELECT count() FROM coalmine.spans WHERE {this_run}"))

    delivered = _generate(settings, stored, plan)
    _wait_until_stored(stored, delivered)

    def counted() -> tuple[int, int]:
        requests = f"SELECT countIf(kind = 'request') FROM coalmine.spans WHERE {this_run}"
        windows = f"SELECT sum(requests) FROM coalmine.version_stats WHERE {emitted_this_run}"
        return int(worker.scalar(windows)), int(worker.scalar(requests))

    _wait_until_windows_emitted(counted, settings.window_seconds + settings.allowed_lateness_s)
    since = began - timedelta(seconds=settings.window_seconds)
    columns, rows = sqlcli.fetch(settings, SUMMARY_QUERY.format(since=f"{since:%Y-%m-%d %H:%M:%S}"))
    say("\nper agent and version, from the window aggregates (coalmine.version_summary):\n")
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


def _wait_until_windows_emitted(counted: Callable[[], tuple[int, int]], window_s: float) -> None:
    say(f"waiting for the last windows to close ({window_s:g} s after they end)...")
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    windowed, requests = counted()
    while windowed < requests and time.monotonic() < deadline:
        time.sleep(0.5)
        windowed, requests = counted()
    say(f"{windowed} of {requests} requests are in the window aggregates")


def say(message: str) -> None:
    print(message, flush=True)
