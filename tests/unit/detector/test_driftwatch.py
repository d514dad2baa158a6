"""DriftWatch: a version against its own history in the stream; drift and cost_spike alerts on
alarms only, partials counted once, idle versions forgotten."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from schemas.alert import Alert, AlertKind
from schemas.judgement import Metric
from streams.detector.drift import DriftConfig
from streams.detector.driftwatch import DriftWatch
from streams.detector.watch import Partial
from tests.unit.detector.sim import Arm, window, window_start

GRACE_S = 3.0
CONFIG = DriftConfig(grace_s=GRACE_S)
PER_WINDOW = 500.0


def feed(
    watch: DriftWatch, rng: np.random.Generator, windows: range, arm: Arm, copies: int = 1
) -> list[Alert]:
    alerts = []
    for i in windows:
        partial = Partial(window(rng, i, "v1", PER_WINDOW, arm))
        alerts += watch.partials([partial] * copies, window_start(i + 1))
        alerts += watch.tick(window_start(i + 1) + timedelta(seconds=GRACE_S))
    return alerts


def test_a_steady_version_raises_nothing_and_more_errors_raise_one_drift_alert() -> None:
    watch = DriftWatch(CONFIG)
    rng = np.random.default_rng(11)
    assert feed(watch, rng, range(150), Arm()) == []
    alerts = feed(watch, rng, range(150, 180), Arm(error_rate=0.04))
    assert [(a.kind, a.metric, a.version) for a in alerts] == [
        (AlertKind.DRIFT, Metric.ERROR_RATE, "v1")
    ]
    (alert,) = alerts
    assert alert.baseline_version is None and alert.evidence is not None
    assert alert.evidence.statistic >= alert.evidence.threshold
    assert alert.message.startswith("agent v1 drifted from its own trailing history: error rate ")


def test_a_cost_rise_is_a_cost_spike() -> None:
    watch = DriftWatch(CONFIG)
    rng = np.random.default_rng(12)
    assert feed(watch, rng, range(150), Arm()) == []
    alerts = feed(watch, rng, range(150, 170), Arm(cost_factor=3.0))
    kinds = {(a.kind, a.metric) for a in alerts}
    assert (AlertKind.COST_SPIKE, Metric.LOG_COST_MEAN) in kinds
    assert {a.kind for a in alerts} == {AlertKind.COST_SPIKE}
    spike = next(a for a in alerts if a.kind is AlertKind.COST_SPIKE)
    assert "cost per request x" in spike.message and "of its history" in spike.message


def test_a_partial_delivered_twice_counts_once_and_idle_versions_are_forgotten() -> None:
    once, twice = DriftWatch(CONFIG), DriftWatch(CONFIG)
    feed(once, np.random.default_rng(13), range(60), Arm())
    feed(twice, np.random.default_rng(13), range(60), Arm(), copies=2)
    assert once.windows == twice.windows == {("agent", "v1"): 60}
    once.tick(window_start(61) + timedelta(seconds=601))
    assert once.windows == {}
    old = Partial(window(np.random.default_rng(14), 0, "v1", PER_WINDOW, Arm()))
    assert once.partials([old], window_start(200)) == []
    assert once.stale == 1 and once.windows == {}
