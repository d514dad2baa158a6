"""``coalmine worker``: migrate, then run the Faust worker until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import gc
import logging

import faust

from schemas.topics import TRACES
from streams.ingest.pricing import load_prices
from streams.logs import quiet_repeats
from streams.runtime import kafka_records
from streams.runtime.app import ClickHouseThread, create_app
from streams.runtime.processor import SpanSink
from streams.settings import Settings
from streams.storage import clickhouse
from streams.topics import ensure_topics

log = logging.getLogger(__name__)


def run(settings: Settings, spans: SpanSink | None = None) -> int:
    """Run the worker until stopped; ``spans`` replaces the ClickHouse span sink (benchmarks)."""
    _use_uvloop()
    _tune_gc()
    kafka_records.install()
    log.debug("settings: %s", settings.masked())
    prices = load_prices(settings.prices_file)
    ensure_topics(settings)
    client = clickhouse.connect(settings)
    applied = clickhouse.migrate(client, settings.spans_ttl_days)
    log.info(
        "%s ready (%d migration(s) applied); %d model prices; consuming %s from %s",
        clickhouse.describe(settings),
        len(applied),
        len(prices),
        settings.topic(TRACES),
        settings.kafka_bootstrap,
    )
    thread = ClickHouseThread(client)
    app = create_app(settings, thread, prices, spans)
    worker = Worker(app, loglevel=settings.log_level.upper(), quiet=True)
    owner = (
        clickhouse.claim_embedded(settings, settings.worker_url)
        if settings.is_embedded_clickhouse
        else None
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    finally:
        thread.close()
        if owner is not None:
            owner.release()
    return 0


class Worker(faust.Worker):
    """Faust's worker, with repeated library log lines held back (:mod:`streams.logs`)."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        # Faust replaces the root handlers as it starts; this is the hook after that.
        quiet_repeats(logger)


def _tune_gc() -> None:
    """Collect garbage less often. Messages wait in memory, unacknowledged, until their window
    is emitted (seconds of traffic), and with Python's default thresholds the collector kept
    walking them: `coalmine bench ingest` measured windows costing ~15% of throughput with the
    defaults and ~0-5% with these."""
    gc.set_threshold(50_000, 50, 50)


def _use_uvloop() -> None:
    """uvloop where it exists: Faust schedules every event on the loop, and uvloop does that
    ~25% faster here (`coalmine bench ingest`)."""
    try:
        import uvloop  # noqa: PLC0415 (optional: not built for Windows)
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
