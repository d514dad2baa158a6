"""CanaryJudge: anytime validity on seeded A/A runs, detection, PASS, robustness, windows."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import timedelta

import numpy as np
import pytest
from scipy import stats

from schemas.window_stats import bucket_upper_ms, latency_histogram, quantile_bucket
from streams.detector import CanaryJudge, JudgeConfig, Metric, Verdict
from tests.unit.detector.sim import Arm, window, window_start

RPS = 100.0
PER_WINDOW = RPS * 5
NOMINAL = Arm()


def run_until(
    judge: CanaryJudge,
    rng: np.random.Generator,
    windows: int,
    *,
    share: float = 0.1,
    canary: Arm = NOMINAL,
    stop: Verdict = Verdict.ROLLBACK,
) -> tuple[int | None, Verdict]:
    """Feed ``windows`` paired windows; return the 1-based window of the first ``stop``."""
    verdict = Verdict.CONTINUE
    for i in range(windows):
        b = window(rng, i, "v1", PER_WINDOW * (1 - share), Arm())
        c = window(rng, i, "v2", PER_WINDOW * share, canary)
        verdict = judge.observe(b, c, window_start(i + 1)).verdict
        if verdict is stop:
            return i + 1, verdict
    return None, verdict


def test_aa_false_rollbacks_stay_within_villes_bound() -> None:
    """Seeded A/A runs with a confounded design: the canary's share of traffic (10 % to 50 %)
    and the common base error rate (0.2 % to 1.8 %) rise and fall together.

    Bound: Ville's inequality makes each metric's e-process cross 1/(alpha w_m) with
    probability at most alpha w_m over an unbounded run, so P(any false rollback in a run)
    <= alpha (weights sum to 1). Runs use independent streams, so the number of runs with a
    false rollback is stochastically below Binomial(R, alpha); a correct judge exceeds that
    distribution's 1e-6 upper quantile with probability below 1e-6. The test uses a loose
    alpha (0.2) so that a judge that is *not* anytime-valid (e.g. one re-running a
    fixed-horizon test at every window) would blow through the bound.
    """
    alpha, runs, windows = 0.2, 24, 240
    config = JudgeConfig(alpha_rollback=alpha, alpha_alert=0.5)
    bound = int(stats.binom.isf(1e-6, runs, alpha))
    false_rollbacks = 0
    pooled = np.zeros(4)
    for r in range(runs):
        rng = np.random.default_rng([20261124, r])
        judge = CanaryJudge(config)
        for i in range(windows):
            phase = math.sin(2 * math.pi * i / 120)
            share = 0.3 + 0.2 * phase
            arm = Arm(
                error_rate=0.01 * (1 + 0.8 * phase), approvals_per_request=0.05 * (1 + 0.8 * phase)
            )
            b = window(rng, i, "v1", PER_WINDOW * (1 - share), arm)
            c = window(rng, i, "v2", PER_WINDOW * share, arm)
            pooled += (c.errors, c.requests, b.errors, b.requests)
            if judge.observe(b, c, window_start(i + 1)).verdict is Verdict.ROLLBACK:
                false_rollbacks += 1
                break
    assert false_rollbacks <= bound
    # The confounding is real: pooled over time the canary looks ~25 % worse.
    assert (pooled[0] / pooled[1]) / (pooled[2] / pooled[3]) > 1.15


def test_clear_error_regression_is_rolled_back_quickly() -> None:
    # 1% -> 4% errors on a 10% canary at 100 rps: about 30 s expected; 5 min is generous.
    judge = CanaryJudge()
    at, _ = run_until(judge, np.random.default_rng(1), 60, canary=Arm(error_rate=0.04))
    assert at is not None
    decision = judge.observe(None, None, window_start(at))
    assert decision.verdict is Verdict.ROLLBACK
    errors = next(e for e in decision.metrics if e.metric is Metric.ERROR_RATE)
    assert errors.verdict is Verdict.ROLLBACK
    assert errors.e_value >= errors.threshold == pytest.approx(1 / (0.01 * 0.5))
    assert errors.cs_lower > 1.0
    assert errors.estimate_canary > errors.estimate_baseline
    assert "error_rate" in decision.explanation
    assert "error_rate" in errors.explanation


def test_a_canary_asking_people_more_often_is_rolled_back_on_the_approval_rate() -> None:
    # Stable's tool calls wait for a person 0.05 times per request, the canary's 0.15 times;
    # everything else equal. A 10% canary at 100 rps: ~7 approvals asked per canary window.
    judge = CanaryJudge()
    rng = np.random.default_rng(5)
    for i in range(120):
        b = window(rng, i, "v1", PER_WINDOW * 0.9, Arm(approvals_per_request=0.05))
        c = window(rng, i, "v2", PER_WINDOW * 0.1, Arm(approvals_per_request=0.15))
        decision = judge.observe(b, c, window_start(i + 1))
        if decision.verdict is Verdict.ROLLBACK:
            break
    else:
        pytest.fail("no rollback in 10 minutes")
    asked = next(e for e in decision.metrics if e.metric is Metric.APPROVAL_RATE)
    assert asked.verdict is Verdict.ROLLBACK
    assert asked.threshold == pytest.approx(1 / (0.01 * 0.05))
    assert asked.estimate_canary == pytest.approx(0.15, rel=0.3)
    assert asked.estimate_baseline == pytest.approx(0.05, rel=0.1)
    assert asked.cs_lower is not None and asked.cs_lower > 1.0


@pytest.mark.parametrize(
    ("arm", "metric", "max_windows"),
    [
        (Arm(latency_factor=1.5), Metric.LATENCY_LOG_MEAN, 12),
        (Arm(quality_shift=-0.1), Metric.QUALITY_MEAN, 12),
        (Arm(cost_factor=1.6), Metric.LOG_COST_MEAN, 12),
        # the same price per call, twice the calls: cost is judged per request
        (Arm(llm_calls_per_request=2), Metric.LOG_COST_MEAN, 12),
    ],
)
def test_mean_regressions_are_rolled_back(arm: Arm, metric: Metric, max_windows: int) -> None:
    judge = CanaryJudge()
    at, _ = run_until(judge, np.random.default_rng(2), max_windows, canary=arm)
    assert at is not None
    decision = judge.observe(None, None, window_start(at))
    assert metric in {e.metric for e in decision.metrics if e.verdict is Verdict.ROLLBACK}


def test_rollback_is_latched() -> None:
    judge = CanaryJudge()
    at, _ = run_until(judge, np.random.default_rng(3), 60, canary=Arm(error_rate=0.05))
    assert at is not None
    _, verdict = run_until(judge, np.random.default_rng(4), 3)
    assert verdict is Verdict.ROLLBACK


def test_equal_versions_pass_on_a_long_run() -> None:
    """1000 rps split 50/50 for up to 10 minutes: every confidence sequence narrows inside
    its tolerance (the approval rate, with no approval asked in either arm, holds nothing
    back)."""
    judge = CanaryJudge()
    rng = np.random.default_rng(5)
    verdict = Verdict.CONTINUE
    for i in range(120):
        b = window(rng, i, "v1", 2500, Arm())
        c = window(rng, i, "v2", 2500, Arm())
        decision = judge.observe(b, c, window_start(i + 1))
        verdict = decision.verdict
        if verdict is Verdict.PASS:
            break
    assert verdict is Verdict.PASS
    for evidence in decision.metrics:
        assert evidence.cs_lower <= evidence.effect <= evidence.cs_upper


def test_horizon_gives_an_honest_inconclusive() -> None:
    judge = CanaryJudge(JudgeConfig(horizon_s=60.0))
    _, verdict = run_until(judge, np.random.default_rng(6), 13, share=0.05)
    assert verdict is Verdict.INCONCLUSIVE


def test_no_decision_before_the_minimum_evidence() -> None:
    judge = CanaryJudge(JudgeConfig(min_requests_per_arm=10_000))
    at, verdict = run_until(judge, np.random.default_rng(7), 20, canary=Arm(error_rate=0.5))
    assert at is None
    assert verdict is Verdict.ALERT or verdict is Verdict.CONTINUE


def _final_evidence(judge: CanaryJudge, now_index: int) -> list[tuple[str, float, float]]:
    decision = judge.observe(None, None, window_start(now_index))
    return [(e.metric.value, e.e_value, e.effect) for e in decision.metrics]


def test_late_and_split_windows_pair_up_exactly() -> None:
    rng = np.random.default_rng(8)
    pairs = [
        (window(rng, i, "v1", 450, Arm()), window(rng, i, "v2", 50, Arm(error_rate=0.03)))
        for i in range(30)
    ]
    together = CanaryJudge()
    for i, (b, c) in enumerate(pairs):
        together.observe(b, c, window_start(i + 1))
    late = CanaryJudge()
    for i, (b, c) in enumerate(pairs):
        late.observe(b, None, window_start(i + 1))
        late.observe(None, c, window_start(i + 1) + timedelta(seconds=3))
    assert _final_evidence(late, 31) == _final_evidence(together, 31)
    assert late.observe(None, None, window_start(31)).windows_unpaired == 0


def test_partials_from_several_workers_merge_before_the_comparison() -> None:
    rng = np.random.default_rng(12)
    merged = CanaryJudge()
    split = CanaryJudge()
    for i in range(30):
        parts = [
            (
                window(rng, i, "v1", 225, Arm(), source=f"w{k}"),
                window(rng, i, "v2", 25, Arm(), source=f"w{k}"),
            )
            for k in (1, 2)
        ]
        (b1, c1), (b2, c2) = parts
        merged.observe(b1.merge(b2), c1.merge(c2), window_start(i + 1))
        early = window_start(i) + timedelta(seconds=2)
        split.observe(b1, c1, early)  # the window has not ended: nothing is compared yet
        split.observe(b2, None, early)
        assert split.observe(None, c2, window_start(i + 1)).windows_compared == i + 1
    assert _final_evidence(split, 31) == _final_evidence(merged, 31)


def test_windows_without_the_other_arm_expire_and_are_counted() -> None:
    rng = np.random.default_rng(9)
    judge = CanaryJudge(JudgeConfig(max_lateness_s=30.0))
    for i in range(20):
        b = window(rng, i, "v1", 450, Arm())
        c = None if i % 4 == 0 else window(rng, i, "v2", 50, Arm())
        decision = judge.observe(b, c, window_start(i + 1))
    assert decision.windows_compared == 15
    # Windows 0, 4, 8, 12 ended more than 30 s ago; window 16 may still get its canary.
    assert decision.windows_unpaired == 4


def test_identity_is_checked() -> None:
    rng = np.random.default_rng(10)
    judge = CanaryJudge()
    judge.observe(window(rng, 0, "v1", 10, Arm()), window(rng, 0, "v2", 10, Arm()), window_start(1))
    with pytest.raises(ValueError, match="version changed"):
        judge.observe(window(rng, 1, "v3", 10, Arm()), None, window_start(2))


def test_latency_reference_freezes_thresholds() -> None:
    rng = np.random.default_rng(11)
    latencies = np.exp(rng.normal(math.log(1500.0), 0.5, size=5000))
    reference = latency_histogram(latencies)
    judge = CanaryJudge(latency_reference=reference)
    thresholds = judge.latency_thresholds_ms
    assert thresholds is not None
    assert thresholds[Metric.LATENCY_P95_EXCEEDANCE] == bucket_upper_ms(
        quantile_bucket(reference, 0.95)
    )
    true_p95 = 1500.0 * math.exp(0.5 * stats.norm.ppf(0.95))
    assert thresholds[Metric.LATENCY_P95_EXCEEDANCE] == pytest.approx(true_p95, rel=0.12)
    # Without a reference, the first 500 baseline requests freeze them.
    fresh = CanaryJudge()
    assert fresh.latency_thresholds_ms is None
    run_until(fresh, rng, 2)
    assert fresh.latency_thresholds_ms is not None


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        JudgeConfig(alpha_rollback=0.0)
    with pytest.raises(ValueError):
        JudgeConfig(metric_weights={Metric.ERROR_RATE: 0.7, Metric.QUALITY_MEAN: 0.7})
    weights = {Metric.ERROR_RATE: 1.0}
    only_errors = CanaryJudge(replace(JudgeConfig(), metric_weights=weights))
    decision = only_errors.observe(None, None, window_start(0))
    assert [e.metric for e in decision.metrics] == [Metric.ERROR_RATE]
