"""CanaryJudge: is the canary version worse than the baseline? Anytime-valid.

The judge is fed window statistics of both arms as they arrive and answers after every call.
Each metric keeps an e-process for "canary worse" and a confidence sequence for the effect:

- rate metrics (errors, task failures, tool errors, approvals asked per request, latency above
  the baseline's frozen p95 / p99) use :class:`~streams.detector.stats.ConditionalRateTest`:
  each window's bad events are split between the arms in proportion to that window's traffic
  under H0, whatever the common base rate or the split is doing (Lindon & Malek 2022;
  Lindon, Sanden & Shirikian 2022);
- mean metrics (log cost, quality, log latency) use
  :class:`~streams.detector.stats.NormalMixtureMeanTest` on within-window differences
  (Robbins 1970; Johari et al. 2022; Howard et al. 2021).

Multiple metrics: weighted Bonferroni over e-values. Metric m with weight w_m rolls back when
its e-process reaches 1 / (alpha_rollback w_m). By Ville's inequality each e-process crosses
its threshold with probability at most alpha_rollback w_m under its null, so the chance of
any false rollback over an unbounded A/A run is at most alpha_rollback (the weights sum to at
most 1); the same holds for alerts at alpha_alert. Minimum-evidence guards only delay
decisions, so they keep this guarantee. PASS needs every metric's confidence sequence (level
alpha_pass) to exclude a degradation beyond its tolerance; a metric neither arm reports (no
tool calls, no quality scores), or a rate with no bad event in either arm, does not hold
PASS back.

Windows: a call may carry one arm, the other, or both. The two arms of a window are compared
only with each other (differences inside a window cancel everything common to both arms),
so a window is compared once both arms are in and the window has ended (plus ``grace_s``),
partials of the same arm and window merge by addition until then, and a window whose other
arm never arrives is given up after ``max_lateness_s`` and counted (it carries no
information for a paired comparison). Partials arriving after their window was compared form
a further, smaller comparison of that window if both arms send one (each comparison is a
valid stratum of the conditional tests), and are otherwise counted as unpaired.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

import numpy as np

from schemas.judgement import MEAN_METRICS, RATE_METRICS, Metric, Verdict
from schemas.window_stats import (
    LATENCY_BUCKET_COUNT,
    WindowStats,
    bucket_upper_ms,
    quantile_bucket,
)
from streams.detector.metrics import mean_sums, rate_counts
from streams.detector.stats import ConditionalRateTest, NormalMixtureMeanTest
from streams.detector.types import Decision, MetricEvidence

DEFAULT_METRIC_WEIGHTS: Mapping[Metric, float] = MappingProxyType(
    {
        Metric.ERROR_RATE: 0.5,
        Metric.TASK_FAILURE_RATE: 0.05,
        Metric.TOOL_ERROR_RATE: 0.05,
        Metric.APPROVAL_RATE: 0.05,
        Metric.LATENCY_P95_EXCEEDANCE: 0.1,
        Metric.LATENCY_P99_EXCEEDANCE: 0.05,
        Metric.LATENCY_LOG_MEAN: 0.05,
        Metric.LOG_COST_MEAN: 0.05,
        Metric.QUALITY_MEAN: 0.1,
    }
)
"""Weighted Bonferroni shares of alpha per metric (they must sum to at most 1). A metric is
judged at level alpha x weight, i.e. e-value threshold 1 / (alpha x weight). Metrics absent
here are off."""

DEFAULT_TOLERANCES: Mapping[Metric, float] = MappingProxyType(
    {
        Metric.ERROR_RATE: 1.25,
        Metric.TASK_FAILURE_RATE: 1.25,
        Metric.TOOL_ERROR_RATE: 1.25,
        Metric.APPROVAL_RATE: 1.25,
        Metric.LATENCY_P95_EXCEEDANCE: 1.25,
        Metric.LATENCY_P99_EXCEEDANCE: 1.5,
        Metric.LATENCY_LOG_MEAN: math.log(1.1),
        Metric.LOG_COST_MEAN: math.log(1.1),
        Metric.QUALITY_MEAN: 0.02,
    }
)
"""Largest degradation still acceptable for PASS: for rate metrics the rate ratio canary /
baseline; for log means the log ratio; for quality the drop in mean score."""

DEFAULT_RATE_PRIORS: Mapping[Metric, tuple[float, float]] = MappingProxyType(
    {
        Metric.ERROR_RATE: (0.45, 0.3),
        Metric.TASK_FAILURE_RATE: (0.45, 0.3),
        Metric.TOOL_ERROR_RATE: (0.45, 0.3),
        Metric.APPROVAL_RATE: (0.45, 0.3),
        Metric.LATENCY_P95_EXCEEDANCE: (0.7, 0.5),
        Metric.LATENCY_P99_EXCEEDANCE: (0.7, 0.5),
    }
)
"""(center, scale) of the normal mixture over the log rate ratio psi > 0 in each rate test's
e-value: most weight on rate ratios of about 1.2 to 3 (errors) and 1.4 to 5 (latency tails)."""

DEFAULT_MEAN_PRIOR_SCALES: Mapping[Metric, float] = MappingProxyType(
    {Metric.LATENCY_LOG_MEAN: 0.2, Metric.LOG_COST_MEAN: 0.3, Metric.QUALITY_MEAN: 0.05}
)
"""Standard deviation of the normal mixture over the mean difference (rho = 1 / scale^2):
the size of effect each mean test is most sensitive to."""

_QUANTILES = {Metric.LATENCY_P95_EXCEEDANCE: 0.95, Metric.LATENCY_P99_EXCEEDANCE: 0.99}


@dataclass(frozen=True)
class JudgeConfig:
    """Everything a CanaryJudge decides with. Defaults are tuned for 5 s windows."""

    alpha_rollback: float = 0.01
    """Probability of any false rollback over an unbounded A/A run, all metrics together."""
    alpha_alert: float = 0.05
    """The same for alerts (looser, so alerts come earlier than rollbacks)."""
    alpha_pass: float = 0.05
    """Probability that PASS is ever declared while a metric is worse beyond its tolerance;
    also the level of the reported confidence sequences."""
    metric_weights: Mapping[Metric, float] = field(
        default_factory=lambda: dict(DEFAULT_METRIC_WEIGHTS)
    )
    tolerances: Mapping[Metric, float] = field(default_factory=lambda: dict(DEFAULT_TOLERANCES))
    rate_prior: Mapping[Metric, tuple[float, float]] = field(
        default_factory=lambda: dict(DEFAULT_RATE_PRIORS)
    )
    """(center, scale) of the normal mixture over the log rate ratio (psi > 0) of each rate
    test's e-value."""
    mean_prior_scales: Mapping[Metric, float] = field(
        default_factory=lambda: dict(DEFAULT_MEAN_PRIOR_SCALES)
    )
    min_requests_per_arm: int = 100
    """No ROLLBACK or PASS before each arm has this many requests."""
    min_canary_events: int = 3
    """No rate-metric ROLLBACK before the canary has this many bad events of that metric."""
    min_mean_observations: int = 20
    """Per arm: within-window degrees of freedom before a mean metric is tested (its
    variance is estimated first), and the smallest block of observations a mean difference
    is taken over (small canaries pool consecutive windows)."""
    latency_reference_requests: int = 500
    """Baseline requests whose histogram freezes the p95 / p99 thresholds (when no reference
    histogram is given to the judge)."""
    grace_s: float = 0.0
    """A window is compared once both arms are in and ``now`` >= window end + ``grace_s``;
    until then, partials of the same arm and window (from several workers) merge."""
    max_lateness_s: float = 60.0
    """A window waiting for the other arm is given up (and counted) this long after its end."""
    horizon_s: float | None = None
    """After this long since the first window without ROLLBACK or PASS: INCONCLUSIVE."""

    def __post_init__(self) -> None:
        for name in ("alpha_rollback", "alpha_alert", "alpha_pass"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1)")
        if any(w <= 0.0 for w in self.metric_weights.values()):
            raise ValueError("metric weights must be positive (leave a metric out to disable it)")
        if sum(self.metric_weights.values()) > 1.0 + 1e-9:
            raise ValueError("metric weights must sum to at most 1")
        for name, table in (
            ("tolerance", self.tolerances),
            ("prior", {**self.rate_prior, **self.mean_prior_scales}),
        ):
            missing = set(self.metric_weights) - set(table)
            if missing:
                raise ValueError(f"no {name} for {sorted(missing)}")


class CanaryJudge:
    """Sequential canary-versus-baseline judge over window statistics (see module docstring).

    One instance judges one (agent, baseline version, canary version) deployment. Pass
    ``latency_reference``, the baseline's latency histogram from before the canary started,
    to freeze the p95 / p99 thresholds at once; otherwise the first
    ``latency_reference_requests`` baseline requests freeze them and the latency exceedance
    tests start with the next window.
    """

    def __init__(
        self, config: JudgeConfig = JudgeConfig(), latency_reference: list[int] | None = None
    ) -> None:
        self.config = config
        weights = config.metric_weights
        self._rate = {
            m: ConditionalRateTest(
                prior_center=config.rate_prior[m][0], prior_scale=config.rate_prior[m][1]
            )
            for m in weights
            if m in RATE_METRICS
        }
        self._mean = {
            m: NormalMixtureMeanTest(
                rho=1.0 / config.mean_prior_scales[m] ** 2,
                worse_sign=-1 if m is Metric.QUALITY_MEAN else 1,
                min_observations=config.min_mean_observations,
                min_block=config.min_mean_observations,
            )
            for m in weights
            if m in MEAN_METRICS
        }
        self._reference = np.zeros(LATENCY_BUCKET_COUNT, dtype=np.int64)
        self._thresholds: dict[Metric, int] | None = None
        if latency_reference is not None:
            self._reference += np.asarray(latency_reference, dtype=np.int64)
            self._freeze_thresholds()
        self._pending: dict[tuple[datetime, bool], WindowStats] = {}
        self._versions: tuple[str, str, str] | None = None
        self._requests = [0, 0]
        self._first_window: datetime | None = None
        self._latched: frozenset[Metric] = frozenset()
        self._windows = 0
        self._unpaired = 0

    @property
    def latency_thresholds_ms(self) -> dict[Metric, float] | None:
        """The frozen latency thresholds (upper edge of the quantile's bucket), once frozen."""
        if self._thresholds is None:
            return None
        return {m: bucket_upper_ms(i) for m, i in self._thresholds.items()}

    def observe(
        self, baseline: WindowStats | None, canary: WindowStats | None, now: datetime
    ) -> Decision:
        """Fold in the windows that arrived (either may be None) and decide.

        Raises ``ValueError`` when a window belongs to another agent, or another version of
        its arm, than the first ones seen (baseline and canary may share a label: A/A).
        """
        for stats, is_canary in ((baseline, False), (canary, True)):
            if stats is not None:
                self._check_identity(stats, is_canary)
                key = (stats.window_start, is_canary)
                held = self._pending.get(key)
                self._pending[key] = stats if held is None else held.merge(stats)
        grace = timedelta(seconds=self.config.grace_s)
        for start in sorted({start for start, _ in self._pending}):
            base, can = self._pending.get((start, False)), self._pending.get((start, True))
            if base is not None and can is not None and base.window_end + grace <= now:
                del self._pending[(start, False)], self._pending[(start, True)]
                self._compare(base, can)
        self._expire(now)
        return self._decide(now)

    def _check_identity(self, stats: WindowStats, is_canary: bool) -> None:
        if self._versions is None:
            self._versions = (stats.agent, "", "")
        agent, base, can = self._versions
        if stats.agent != agent:
            raise ValueError(f"window of agent {stats.agent!r} given to the judge of {agent!r}")
        slot = can if is_canary else base
        if slot and slot != stats.version:
            raise ValueError(f"version changed mid-deployment: {slot!r} -> {stats.version!r}")
        if not slot:
            self._versions = (
                (agent, base, stats.version) if is_canary else (agent, stats.version, can)
            )

    def _expire(self, now: datetime) -> None:
        limit = timedelta(seconds=self.config.max_lateness_s)
        for key in [k for k, s in self._pending.items() if s.window_end + limit < now]:
            del self._pending[key]
            self._unpaired += 1

    def _compare(self, baseline: WindowStats, canary: WindowStats) -> None:
        self._windows += 1
        if self._first_window is None or baseline.window_start < self._first_window:
            self._first_window = baseline.window_start
        self._requests[0] += baseline.requests
        self._requests[1] += canary.requests
        for metric, test in self._rate.items():
            threshold = None if self._thresholds is None else self._thresholds.get(metric)
            if metric in _QUANTILES and threshold is None:
                continue
            x_c, n_c = rate_counts(canary, metric, threshold)
            x_b, n_b = rate_counts(baseline, metric, threshold)
            test.update(x_c, n_c, x_b, n_b)
        for metric, mean_test in self._mean.items():
            mean_test.update(mean_sums(canary, metric), mean_sums(baseline, metric))
        if self._thresholds is None:
            self._reference += np.asarray(baseline.latency_buckets, dtype=np.int64)
            if self._reference.sum() >= self.config.latency_reference_requests:
                self._freeze_thresholds()

    def _freeze_thresholds(self) -> None:
        if self._reference.sum() <= 0:
            return
        counts = [int(c) for c in self._reference]
        self._thresholds = {m: quantile_bucket(counts, q) for m, q in _QUANTILES.items()}

    def _decide(self, now: datetime) -> Decision:
        evidence = tuple(self._rate_evidence(m) for m in self._rate) + tuple(
            self._mean_evidence(m) for m in self._mean
        )
        latched = {e.metric for e in evidence if e.verdict is Verdict.ROLLBACK}
        self._latched = self._latched | latched
        verdict, summary = self._overall(evidence, now)
        return Decision(
            verdict=verdict,
            metrics=evidence,
            now=now,
            explanation=summary,
            windows_compared=self._windows,
            windows_unpaired=self._unpaired,
        )

    def _overall(self, evidence: tuple[MetricEvidence, ...], now: datetime) -> tuple[Verdict, str]:
        if self._latched:
            names = ", ".join(sorted(self._latched))
            return (
                Verdict.ROLLBACK,
                f"canary worse on {names} at alpha={self.config.alpha_rollback}",
            )
        alerts = [e.metric for e in evidence if e.verdict is Verdict.ALERT]
        if alerts:
            names = ", ".join(sorted(alerts))
            return (
                Verdict.ALERT,
                f"canary likely worse on {names} at alpha={self.config.alpha_alert}",
            )
        if evidence and all(e.verdict is Verdict.PASS for e in evidence):
            return Verdict.PASS, "canary not worse beyond tolerance on every metric"
        horizon = self.config.horizon_s
        if (
            horizon is not None
            and self._first_window is not None
            and now - self._first_window >= timedelta(seconds=horizon)
        ):
            return Verdict.INCONCLUSIVE, f"no decision within {horizon:g} s at these tolerances"
        waiting = sorted(e.metric for e in evidence if e.verdict is not Verdict.PASS)
        return Verdict.CONTINUE, "collecting evidence on " + (", ".join(waiting) or "all metrics")

    def _thresholds_for(self, metric: Metric) -> tuple[float, float]:
        weight = self.config.metric_weights[metric]
        return 1.0 / (self.config.alpha_rollback * weight), 1.0 / (self.config.alpha_alert * weight)

    def _guards_hold(self) -> bool:
        return min(self._requests) >= self.config.min_requests_per_arm

    def _rate_evidence(self, metric: Metric) -> MetricEvidence:
        test = self._rate[metric]
        rollback_at, alert_at = self._thresholds_for(metric)
        log_e_max = test.log_e_max_value()
        lower, upper = test.confidence_sequence(self.config.alpha_pass)
        n_c, n_b = test.trials_canary, test.trials_baseline
        rate_c = test.events_canary / n_c if n_c else 0.0
        rate_b = test.events_baseline / n_b if n_b else 0.0
        no_events = test.events_canary + test.events_baseline == 0
        enough = self._guards_hold()
        tol = self.config.tolerances[metric]
        if metric in self._latched or (
            enough
            and test.events_canary >= self.config.min_canary_events
            and log_e_max >= math.log(rollback_at)
        ):
            verdict = Verdict.ROLLBACK
        elif enough and log_e_max >= math.log(alert_at):
            verdict = Verdict.ALERT
        elif enough and (
            (n_c + n_b == 0 and (metric not in _QUANTILES or self._thresholds is not None))
            or (min(n_c, n_b) > 0 and (no_events or upper <= tol))
        ):
            verdict = Verdict.PASS  # no trials in either arm: the metric does not apply
        else:
            verdict = Verdict.CONTINUE
        effect = test.estimate()
        note = (
            "no bad events yet"
            if no_events
            else f"rate ratio {effect:.2f} in [{lower:.2f}, {upper:.2f}]"
        )
        return MetricEvidence(
            metric=metric,
            estimate_baseline=rate_b,
            estimate_canary=rate_c,
            effect=effect,
            e_value=math.exp(min(test.log_e_value(), 700.0)),
            cs_lower=lower,
            cs_upper=upper,
            n_baseline=n_b,
            n_canary=n_c,
            threshold=rollback_at,
            verdict=verdict,
            explanation=f"{metric}: canary {rate_c:.4g} vs baseline {rate_b:.4g}, {note}, "
            f"max e={math.exp(min(log_e_max, 700.0)):.3g} (rollback at {rollback_at:.3g})"
            f" -> {verdict}",
        )

    def _mean_evidence(self, metric: Metric) -> MetricEvidence:
        test = self._mean[metric]
        rollback_at, alert_at = self._thresholds_for(metric)
        lower, upper = test.confidence_sequence(self.config.alpha_pass)
        tolerance = self.config.tolerances[metric]
        enough = self._guards_hold() and test.active
        if metric in self._latched or (enough and test.log_e_max >= math.log(rollback_at)):
            verdict = Verdict.ROLLBACK
        elif enough and test.log_e_max >= math.log(alert_at):
            verdict = Verdict.ALERT
        elif enough and (lower >= -tolerance if test.worse_sign < 0 else upper <= tolerance):
            verdict = Verdict.PASS
        elif self._guards_hold() and test.n == [0, 0]:
            verdict = Verdict.PASS  # the metric is not reported by either arm: not applicable
        else:
            verdict = Verdict.CONTINUE
        mean_c, mean_b = test.means()
        effect = test.estimate()
        return MetricEvidence(
            metric=metric,
            estimate_baseline=mean_b,
            estimate_canary=mean_c,
            effect=effect,
            e_value=math.exp(min(test.log_e_value(), 700.0)),
            cs_lower=lower,
            cs_upper=upper,
            n_baseline=test.n[1],
            n_canary=test.n[0],
            threshold=rollback_at,
            verdict=verdict,
            explanation=f"{metric}: canary {mean_c:.4g} vs baseline {mean_b:.4g}, difference "
            f"{effect:+.4g} in [{lower:+.4g}, {upper:+.4g}], "
            f"max e={math.exp(min(test.log_e_max, 700.0)):.3g} (rollback at {rollback_at:.3g})"
            f" -> {verdict}",
        )
