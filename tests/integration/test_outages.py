"""Trouble an operator sees and survives: a broker restart and a full chDB disk under traffic,
and a restart right after a SIGKILL. Real broker, real chDB, real worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from streams import sqlcli
from streams.devtools import localkafka
from streams.devtools.worker_process import WorkerProcess
from streams.sdk import KafkaPublisher, Tracer
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.harness import isolated_settings, running_worker, wait_for
from tests.integration.test_ingest_pipeline import AcknowledgedIds, trace_requests
from tests.unit.storage.test_embedded_owner import wait_until_zombie

pytestmark = pytest.mark.integration

SMALL_DISK = "64m"


class Traffic:
    """SDK traffic in a thread: a few dozen spans every 0.1 s until :meth:`stop`, each
    acknowledged id recorded. The SDK queues while the broker is away."""

    def __init__(self, settings: Settings) -> None:
        self.acknowledged = AcknowledgedIds()
        self.publisher = KafkaPublisher.from_settings(settings, on_delivery=self.acknowledged)
        self._tracer = Tracer("ops-agent", "v1", self.publisher)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            trace_requests(self._tracer, 10)
            time.sleep(0.1)

    def stop(self) -> set[str]:
        """Stop producing, wait for every queued span; returns the acknowledged event ids."""
        self._done.set()
        self._thread.join()
        assert self.publisher.flush(120) == 0
        self.publisher.close(5)
        assert self.acknowledged.failed == 0
        return self.acknowledged.ids


def wait_for_status(
    worker: WorkerProcess, status: str, timeout_s: float = 120.0, lag_known: bool = False
) -> Any:
    """Poll ``/health`` until it says ``status`` (and, with ``lag_known``, a consumer lag:
    the committed offsets are read again after a rebalance); returns that document."""
    deadline = time.monotonic() + timeout_s
    document: dict[str, Any] = {}
    while time.monotonic() < deadline:
        document = worker.health()
        if document["status"] == status and (document["consumer_lag"] is not None or not lag_known):
            return document
        time.sleep(0.5)
    raise AssertionError(f"/health did not say {status} in {timeout_s:.0f} s; last: {document}")


def assert_stored_exactly(worker: WorkerProcess, acknowledged: set[str]) -> None:
    expected = len(acknowledged)
    query = "SELECT count() FROM coalmine.spans"
    assert wait_for(worker, query, expected, timeout_s=180) == expected
    count, unique = worker.sql("SELECT count(), uniqExact(event_id) FROM coalmine.spans")[0]
    assert (count, unique) == (expected, expected)
    stored = {row[0] for row in worker.sql("SELECT toString(event_id) FROM coalmine.spans")}
    assert stored == acknowledged


def wait_until_stored(worker: WorkerProcess) -> None:
    deadline = time.monotonic() + 60
    while worker.scalar("SELECT count() FROM coalmine.spans") == 0:
        assert time.monotonic() < deadline, worker.log_tail()
        time.sleep(0.5)


# --- the broker goes away and comes back ----------------------------------------------------


def test_a_broker_restart_mid_stream_loses_nothing_and_shows_in_health(
    own_broker: Settings, tmp_path: Path
) -> None:
    settings = isolated_settings(own_broker, tmp_path)
    with running_worker(settings, tmp_path / "worker.log") as worker:
        traffic = Traffic(settings)
        try:
            wait_until_stored(worker)
            wait_for_status(worker, "ok")
            localkafka.down(settings)
            during = wait_for_status(worker, "degraded")
            queued_in_outage = traffic.publisher.stats.pending
            localkafka.up(settings, detach=False)
            after = wait_for_status(worker, "ok")  # with the traffic still running
        finally:
            acknowledged = traffic.stop()
        assert any("no fetch response from the broker" in r for r in during["reasons"]), during
        assert queued_in_outage > 0
        assert_stored_exactly(worker, acknowledged)
        assert after["reasons"] == [] and after["retrying"] == []
        assert wait_for_status(worker, "ok", lag_known=True)["consumer_lag"] >= 0


# --- the chDB disk fills up and is freed ----------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of :data:`SMALL_DISK` for the chDB folder, unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL_DISK}", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        reason = mounted.stderr.strip()
        pytest.fail(f"this test mounts a tmpfs (root with CAP_SYS_ADMIN): {reason}", pytrace=False)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=True)


def fill(disk: Path) -> Path:
    """Write a ballast file until the disk has no space left; returns it."""
    ballast = disk / "ballast"
    chunk = b"\0" * (1 << 20)
    with ballast.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError as exc:
            assert exc.errno == 28, exc  # ENOSPC
    return ballast


def test_a_full_chdb_disk_mid_stream_loses_nothing_and_shows_in_health(
    kafka_settings: Settings, small_disk: Path, tmp_path: Path
) -> None:
    settings = replace(
        isolated_settings(kafka_settings, tmp_path), clickhouse_url=f"chdb://{small_disk}/chdb"
    )
    with running_worker(settings, tmp_path / "worker.log") as worker:
        traffic = Traffic(settings)
        try:
            wait_until_stored(worker)
            assert wait_for_status(worker, "ok")["retrying"] == []
            ballast = fill(small_disk)
            sent_before_fault = len(traffic.acknowledged.ids)
            during = wait_for_status(worker, "degraded")
            sent_in_fault = len(traffic.acknowledged.ids) - sent_before_fault
            ballast.unlink()
            after = wait_for_status(worker, "ok")  # with the traffic still running
        finally:
            acknowledged = traffic.stop()
        failing = [r for r in during["reasons"] if r.startswith("ClickHouse insert failing")]
        assert failing and "NOT_ENOUGH_SPACE" in failing[0], during
        assert sent_in_fault > 0
        assert_stored_exactly(worker, acknowledged)
        assert after["reasons"] == [] and after["retrying"] == []
        assert after["sink_retries"] > 0


# --- a restart right after SIGKILL ----------------------------------------------------------


def test_a_worker_starts_while_its_killed_predecessor_is_not_reaped_yet(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    """A supervisor restarts a crashed worker before (or without) reaping the dead one; the
    dead process still has its pid then, but no longer holds the chDB folder."""
    settings = isolated_settings(kafka_settings, tmp_path)
    ensure_topics(settings)
    log = tmp_path / "worker.log"
    with log.open("ab") as out:
        first = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            env={**os.environ, **settings.as_env()},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while not sqlcli.worker_answers(settings.worker_url):
            assert first.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        first.send_signal(signal.SIGKILL)
        assert wait_until_zombie(first.pid)
        with WorkerProcess(settings, log) as second:  # raises if the start is refused
            traffic = Traffic(settings)
            time.sleep(1)
            acknowledged = traffic.stop()
            assert_stored_exactly(second, acknowledged)
            assert os.path.exists(f"/proc/{first.pid}")  # still unreaped all along
    finally:
        first.kill()
        first.wait()
