"""DriftDetector: false alarms bounded through the e-detector's ARL, detection, windows."""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest
from scipy import stats

from streams.detector import DriftConfig, DriftDetector, Metric, Verdict
from tests.unit.detector.sim import Arm, window, window_start

PER_WINDOW = 500.0  # one version at 100 rps, 5 s windows


def test_stationary_runs_raise_few_false_alarms() -> None:
    """Bound: the alarm statistic is dominated by a mixture of Shiryaev-Roberts statistics
    R_t, a non-negative submartingale with E[R_t] = t under no change, so Doob's maximal
    inequality gives P(alarm within T windows) <= T / c for threshold c = ``arl0_windows``
    (Shin, Ramdas & Rinaldo 2024). With a deliberately low c the per-run bound p = T / c is
    large enough that a detector without that property would exceed the Binomial(R, p)
    1e-6 upper quantile; a correct one does so with probability below 1e-6 (up to the
    plug-in reference, which the detector only trusts after 20,000 requests)."""
    runs, windows, arl0 = 12, 400, 20_000.0
    config = DriftConfig(arl0_windows=arl0)
    bound = int(stats.binom.isf(1e-6, runs, windows / arl0))
    alarms = 0
    for r in range(runs):
        rng = np.random.default_rng([424242, r])
        detector = DriftDetector(config)
        for i in range(windows):
            decision = detector.observe(
                window(rng, i, "v1", PER_WINDOW, Arm()), window_start(i + 1)
            )
            if decision.verdict is Verdict.ALERT:
                alarms += 1
                break
    assert alarms <= bound


def test_error_rate_doubling_is_detected_within_a_minute_or_two() -> None:
    rng = np.random.default_rng(77)
    detector = DriftDetector()
    onset, verdict = 150, Verdict.CONTINUE
    for i in range(onset + 24):
        arm = Arm(error_rate=0.02 if i >= onset else 0.01)
        decision = detector.observe(window(rng, i, "v1", PER_WINDOW, arm), window_start(i + 1))
        verdict = decision.verdict
        if verdict is Verdict.ALERT:
            break
    assert verdict is Verdict.ALERT
    assert i >= onset
    errors = next(e for e in decision.metrics if e.metric is Metric.ERROR_RATE)
    assert errors.verdict is Verdict.ALERT
    assert errors.e_value >= errors.threshold == pytest.approx(2 * 17_280 / 0.35)
    assert "error_rate" in decision.explanation


def test_cost_spike_is_detected() -> None:
    rng = np.random.default_rng(78)
    detector = DriftDetector()
    for i in range(150):
        detector.observe(window(rng, i, "v1", PER_WINDOW, Arm()), window_start(i + 1))
    decision = detector.observe(
        window(rng, 150, "v1", PER_WINDOW, Arm(cost_factor=1.5)), window_start(151)
    )
    assert decision.verdict is Verdict.ALERT
    cost = next(e for e in decision.metrics if e.metric is Metric.LOG_COST_MEAN)
    assert cost.effect == pytest.approx(math.log(1.5), abs=0.1)


def test_a_version_looping_into_more_llm_calls_is_a_cost_spike() -> None:
    """Each call costs what it did; a request makes twice as many."""
    rng = np.random.default_rng(78)
    detector = DriftDetector()
    for i in range(150):
        detector.observe(window(rng, i, "v1", PER_WINDOW, Arm()), window_start(i + 1))
    looping = window(rng, 150, "v1", PER_WINDOW, Arm(llm_calls_per_request=2))
    decision = detector.observe(looping, window_start(151))
    assert decision.verdict is Verdict.ALERT
    cost = next(e for e in decision.metrics if e.metric is Metric.LOG_COST_MEAN)
    assert cost.effect > math.log(2)


def test_no_test_before_the_reference_is_built() -> None:
    rng = np.random.default_rng(79)
    detector = DriftDetector()
    decision = detector.observe(window(rng, 0, "v1", PER_WINDOW, Arm()), window_start(1))
    assert decision.verdict is Verdict.CONTINUE
    assert decision.metrics == ()
    assert "reference" in decision.explanation


def test_partials_merge_and_late_partials_are_counted() -> None:
    rng = np.random.default_rng(80)
    detector = DriftDetector()
    a = window(rng, 0, "v1", 200, Arm(), source="w1")
    b = window(rng, 0, "v1", 200, Arm(), source="w2")
    assert detector.observe(a, window_start(0) + timedelta(seconds=1)).windows_compared == 0
    assert detector.observe(b, window_start(1)).windows_compared == 1
    late = window(rng, 0, "v1", 10, Arm(), source="w3")
    decision = detector.observe(late, window_start(2))
    assert (decision.windows_compared, decision.windows_unpaired) == (2, 1)
    with pytest.raises(ValueError):
        detector.observe(window(rng, 3, "v2", 10, Arm()), window_start(4))


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        DriftConfig(arl0_windows=1.0)
    with pytest.raises(ValueError):
        DriftConfig(metric_weights={Metric.ERROR_RATE: 2.0})
