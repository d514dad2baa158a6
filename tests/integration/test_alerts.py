"""Alerts for people and tools on the real broker and chDB: the worker stores judgements,
alerts and rollback requests once each whatever is delivered again, one deployment's
timeline reads in order, ``coalmine alerts`` filters and follows, and the webhook gets each
alert once, retried, without a dead webhook costing anything else.

Events are made by hand with the schemas (tests/unit/alerts/examples.py), as the detector
would emit them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from pydantic import BaseModel

from schemas.alert import Alert
from schemas.deployment import DeploymentChange, DeploymentState, Phase
from schemas.judgement import Verdict
from schemas.topics import ALERTS, DEPLOYMENTS, JUDGEMENTS, ROLLBACKS
from streams.devtools import localkafka
from streams.devtools.worker_process import WorkerProcess
from streams.sdk.kafka_security import client_config
from streams.settings import Settings
from streams.topics import ensure_topics
from tests.integration.controller_harness import coalmine, produce
from tests.integration.harness import isolated_settings, running_worker, wait_for, worker
from tests.integration.test_versions import health_counter, rewind
from tests.unit.alerts.examples import (
    DEPLOYED_AT,
    drift_alert,
    judgement,
    regression_alert,
    rollback_request,
)
from tests.unit.storage.test_control_rows import canary_state

pytestmark = pytest.mark.integration
__all__ = ["worker"]  # the fixture, imported for the tests below


def deployment(generation: int, seconds: float, **fields: Any) -> DeploymentState:
    change = DeploymentChange(from_phase=Phase.IDLE, cause="deploy", issued_by="alice")
    return canary_state().model_copy(
        update={
            "generation": generation,
            "updated_at": DEPLOYED_AT + timedelta(seconds=seconds),
            "change": change,
            **fields,
        }
    )


def keyed(*events: Any) -> list[tuple[str, BaseModel]]:
    return [(event.agent, event) for event in events]


# --- stored once, and the timeline ----------------------------------------------------------


def test_detector_events_are_stored_once_and_a_rollout_s_timeline_is_in_order(
    worker: WorkerProcess,
) -> None:
    settings = worker.settings
    rolled_back = DeploymentChange(
        from_phase=Phase.CANARY, cause="rollback", command_id="rollback-1", issued_by="detector"
    )
    states = [
        deployment(1, 0),
        deployment(2, 61.5, phase=Phase.ROLLED_BACK, canary_weight=0.0, change=rolled_back),
        deployment(3, 300, rollout_id="cmd-2", canary_version="v3"),  # the next rollout
    ]
    judgements = [
        judgement(5, Verdict.CONTINUE),
        judgement(10, Verdict.CONTINUE),  # no change of verdict: not in the timeline
        judgement(30, Verdict.ALERT, 40.0),
        judgement(60, Verdict.ROLLBACK, 143.0),
        judgement(320, Verdict.CONTINUE, rollout_id="cmd-2"),
    ]
    alert = regression_alert(60)
    alerts = [alert, drift_alert(), regression_alert(330, rollout_id="cmd-2", alert_id="alert-2")]
    rollbacks = [
        rollback_request(61),
        rollback_request(335, alert_ids=("alert-2",), request_id="rollback-2"),
    ]
    produce(settings, DEPLOYMENTS, keyed(*states))
    # Every detector record twice (a redelivery, a detector re-emitting after a restart with
    # another time stamp), and records that are not events.
    again = alert.model_copy(update={"time": alert.time + timedelta(seconds=9)})
    for topic, events in (
        (JUDGEMENTS, judgements),
        (ALERTS, [*alerts, again]),
        (ROLLBACKS, rollbacks),
    ):
        produce(settings, topic, keyed(*events, *events[:1]))
    junk = Producer(client_config(settings))
    junk.produce(settings.topic(ALERTS), b'{"id": "x"}', b"support-bot")
    junk.produce(settings.topic(JUDGEMENTS), None, b"support-bot")
    assert junk.flush(30) == 0

    counts = {"judgements": 5, "alerts": 3, "rollbacks": 2, "deployment_events": 3}
    for table, count in counts.items():
        assert wait_for(worker, f"SELECT count() FROM coalmine.{table}", count) == count, table
    assert health_counter(worker, "detector_event_repeats", 4) == 4  # 3 copies, 1 re-emitted
    assert health_counter(worker, "control_records_skipped", 2) == 2
    kept = worker.scalar("SELECT time FROM coalmine.alerts WHERE id = 'alert-1'")
    assert kept == f"{alert.time:%Y-%m-%d %H:%M:%S}.000"  # the first record of an id is kept

    timeline = worker.sql(
        "SELECT source, event, version, ref, time "
        "FROM coalmine.deployment_timeline(agent = 'support-bot', rollout_id = 'cmd-1')"
    )
    assert [row[:4] for row in timeline] == [
        ["deployment", "deploy", "v2", "1"],
        ["judgement", "continue", "v2", "judgement-cmd-1-5"],
        ["judgement", "alert", "v2", "judgement-cmd-1-30"],
        ["judgement", "rollback", "v2", "judgement-cmd-1-60"],
        ["alert", "canary_regression", "v2", "alert-1"],  # the same ms: after the judgement
        ["rollback", "requested", "v2", "rollback-1"],
        ["deployment", "rollback", "v2", "2"],
    ]
    assert [row[4] for row in timeline] == sorted(row[4] for row in timeline)
    detail = worker.scalar(
        "SELECT detail FROM coalmine.deployment_timeline(agent = 'support-bot', "
        "rollout_id = 'cmd-1') WHERE source = 'alert'"
    )
    assert detail == f"critical: {alert.message}"
    metrics = worker.sql(
        "SELECT m.metric, m.e_value FROM coalmine.judgements ARRAY JOIN metrics AS m "
        "WHERE id = 'judgement-cmd-1-60' ORDER BY m.metric"
    )
    assert metrics == [["error_rate", 143.0], ["quality_mean", 0.5]]

    # A crash, and every topic read again from its start: not one row more.
    worker.kill()
    for topic in (JUDGEMENTS, ALERTS, ROLLBACKS):
        rewind(settings, settings.topic(topic))
    worker.start()
    produce(settings, ALERTS, keyed(regression_alert(400, alert_id="alert-3")))
    assert wait_for(worker, "SELECT count() FROM coalmine.alerts", 4) == 4
    assert health_counter(worker, "detector_event_repeats", 6 + 5 + 3) == 14
    for table, count in {**counts, "alerts": 4}.items():
        assert worker.scalar(f"SELECT count() FROM coalmine.{table}") == count, table
    assert worker.health()["status"] == "ok"


# --- coalmine alerts ------------------------------------------------------------------------


def produce_at(settings: Settings, events: list[tuple[Alert, datetime]]) -> None:
    """Alerts on their topic, each record stamped with the given time (as if produced then)."""
    producer = Producer({**client_config(settings), "acks": "all"})
    for event, when in events:
        producer.produce(
            settings.topic(ALERTS),
            event.model_dump_json().encode(),
            event.agent.encode(),
            timestamp=int(when.timestamp() * 1000),
        )
    assert producer.flush(30) == 0


def test_the_command_line_shows_filters_and_follows_alerts(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    settings = isolated_settings(kafka_settings, tmp_path)
    assert coalmine(settings, "alerts").stdout == "no alerts\n"  # no topic yet
    ensure_topics(settings)
    now = datetime.now(UTC).replace(microsecond=0)
    old = regression_alert(alert_id="old").model_copy(update={"time": now - timedelta(hours=3)})
    recent = regression_alert(alert_id="recent").model_copy(update={"time": now})
    other = regression_alert(agent="billing-bot", alert_id="other").model_copy(update={"time": now})
    # `early` says it is recent but was produced 3 h ago: --since seeks past it by the
    # records' time index, where a filter on the alerts' own time would have shown it.
    # `late` was produced now about two hours ago: the filter on the alerts' time drops it.
    early = other.model_copy(update={"id": "early"})
    late = old.model_copy(update={"id": "late", "time": now - timedelta(hours=2)})
    records = [(early, old.time), (old, old.time), (recent, now), (other, now), (late, now)]
    produce_at(settings, records)
    junk = Producer(client_config(settings))
    junk.produce(settings.topic(ALERTS), b"{not json", b"support-bot")
    assert junk.flush(30) == 0

    everything = coalmine(settings, "alerts")
    assert everything.returncode == 0, everything.stderr
    assert everything.stderr.startswith("coalmine: skipped the record at offset 5: not an Alert")
    assert len(everything.stderr.splitlines()) == 1
    lines = everything.stdout.splitlines()
    assert len(lines) == 5
    assert lines[2] == f"{now:%Y-%m-%d %H:%M:%S}Z canary_regression critical: {recent.message}"
    assert "support-bot v2 vs v1: error rate 2.1% vs 1.0%, e-value 143 > threshold 100" in lines[2]

    recent_json = coalmine(settings, "alerts", "--since", "1h", "--json")
    assert [Alert.model_validate_json(line).id for line in recent_json.stdout.splitlines()] == [
        "recent",
        "other",
    ]
    since_iso = (now - timedelta(hours=4)).isoformat()
    one_agent = coalmine(settings, "alerts", "--since", since_iso, "--agent", "support-bot")
    assert len(one_agent.stdout.splitlines()) == 3
    assert coalmine(settings, "alerts", "--since", "0s").stdout == "no alerts\n"

    with following(settings, "--agent", "support-bot", "--json") as follower:
        shown = [Alert.model_validate_json(follower.line()).id for _ in range(3)]
        assert shown == ["old", "recent", "late"]
        produce_at(settings, [(other.model_copy(update={"id": "later-other"}), now)])
        fresh = regression_alert(alert_id="fresh")
        produce_at(settings, [(fresh, datetime.now(UTC))])
        assert Alert.model_validate_json(follower.line()).id == "fresh"  # billing-bot's skipped
        follower.process.send_signal(signal.SIGINT)
        assert follower.process.wait(30) == 0
        assert follower.process.stderr is not None
        stderr = follower.process.stderr.read()  # the junk record's line, no traceback
        assert stderr.splitlines() == everything.stderr.splitlines()


@dataclass
class Follower:
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def line(self, timeout_s: float = 30) -> str:
        """The next line printed, waiting up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not self.lines:
            assert time.monotonic() < deadline, "no line printed"
            time.sleep(0.05)
        return self.lines.pop(0)


@contextmanager
def following(settings: Settings, *args: str) -> Iterator[Follower]:
    with subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "alerts", "--follow", *args],
        env={**os.environ, **settings.as_env()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        follower = Follower(process)

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                follower.lines.append(line.rstrip("\n"))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            yield follower
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(10)
            reader.join(10)


# --- the webhook ----------------------------------------------------------------------------


@dataclass
class Webhook:
    """A local HTTP server answering POSTs from a script of statuses (200 after it), or never
    answering (``hang``). Keeps each request's JSON and headers."""

    statuses: list[int] = field(default_factory=list)
    hang: bool = False
    received: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)


@contextmanager
def webhook_server(hook: Webhook) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            hook.received.append(json.loads(body))
            hook.headers.append(dict(self.headers))
            if hook.hang:
                hook.released.wait(60)
                return
            status = hook.statuses.pop(0) if hook.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/coalmine"
    finally:
        hook.released.set()
        server.shutdown()
        server.server_close()


def with_webhook(kafka_settings: Settings, tmp_path: Path, url: str, **fields: Any) -> Settings:
    return replace(
        isolated_settings(kafka_settings, tmp_path),
        alert_webhook_url=url,
        alert_webhook_token="s3cret-token",
        **fields,
    )


def test_the_webhook_gets_each_alert_once_retried_after_500s(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    hook = Webhook(statuses=[500, 503])
    with webhook_server(hook) as url:
        settings = with_webhook(kafka_settings, tmp_path, url)
        with running_worker(settings, tmp_path / "worker.log") as worker:
            first, second = regression_alert(alert_id="a1"), drift_alert()
            produce(settings, ALERTS, keyed(first, second, first))  # a1 delivered twice
            assert health_counter(worker, "webhook_sent", 2) == 2
            counters = worker.health()
            produce(settings, ALERTS, keyed(second))  # and once more later
            assert wait_for(worker, "SELECT count() FROM coalmine.alerts", 2) == 2
            assert health_counter(worker, "detector_event_repeats", 2) == 2
    ids = [body["id"] for body in hook.received]
    assert ids == ["a1", "a1", "a1", second.id]  # two 500s, then each alert once
    assert (counters["webhook_failed_attempts"], counters["webhook_given_up"]) == (2, 0)
    body = hook.received[-1]
    text = body.pop("text")
    assert Alert.model_validate(body) == second
    assert text == f"[WARNING] cost spike: {second.message}"
    assert {h["Authorization"] for h in hook.headers} == {"Bearer s3cret-token"}
    assert {h["Content-Type"] for h in hook.headers} == {"application/json"}


@pytest.mark.parametrize("dead", ["refused", "hanging"])
def test_a_dead_webhook_loses_nothing_else(
    kafka_settings: Settings, tmp_path: Path, dead: str
) -> None:
    hook = Webhook(hang=True)
    with webhook_server(hook) as hanging_url:
        url = (
            hanging_url
            if dead == "hanging"
            else f"http://127.0.0.1:{localkafka.free_loopback_port()}/nobody-listens"
        )
        settings = with_webhook(
            kafka_settings,
            tmp_path,
            url,
            alert_webhook_timeout_s=0.5,
            alert_webhook_attempts=2,
            alert_webhook_queue=3,
        )
        with running_worker(settings, tmp_path / "worker.log") as worker:
            alerts = [regression_alert(alert_id=f"a{i}") for i in range(8)]
            produce(settings, ALERTS, keyed(*alerts))
            produce(settings, JUDGEMENTS, keyed(judgement(5, Verdict.CONTINUE)))
            assert wait_for(worker, "SELECT count() FROM coalmine.alerts", 8) == 8
            assert wait_for(worker, "SELECT count() FROM coalmine.judgements", 1) == 1
            health = worker.health()
            assert health["status"] == "ok", health
            assert health["alerts_stored"] == 8
            # Each alert is given up after its two attempts, or dropped unsent when it was
            # the oldest of a full queue (how many depends on how the batches fell).
            health = settled(worker)
            assert health["webhook_dropped"] >= 8 - 1 - 3
            assert health["webhook_failed_attempts"] == 2 * health["webhook_given_up"]
            assert worker.health()["status"] == "ok"
    if dead == "hanging":
        posted = [body["id"] for body in hook.received]
        assert posted == sorted(posted)  # in order, the oldest dropped first
        assert posted[-2:] == ["a7", "a7"]
        assert all(posted.count(i) == 2 for i in posted)
        assert len(posted) == 2 * health["webhook_given_up"]


def settled(worker: WorkerProcess, alerts: int = 8, timeout_s: float = 60) -> dict[str, Any]:
    """``/health`` once every alert was given up or dropped (or after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    health = worker.health()
    while health["webhook_dropped"] + health["webhook_given_up"] < alerts:
        assert time.monotonic() < deadline, health
        time.sleep(0.5)
        health = worker.health()
    return health
