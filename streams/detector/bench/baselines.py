"""The judges Coalmine's is compared with: Kayenta-style and Flagger/Argo-style.

Both work, as their originals do, on *per-minute* values of each metric, and both have the
same ``observe(baseline, canary, now)`` shape as :class:`streams.detector.CanaryJudge`. A
window is folded into the minute its ``window_start`` falls in; a minute is closed once
``now`` reaches its end (later windows of a closed minute are counted in ``late_windows``
and ignored). Every metric is oriented so that higher is worse (quality enters as its
shortfall 1 - mean, task completion as the failure rate).

- :class:`KayentaJudge` follows Netflix's ACA judge (spinnaker/kayenta ``NetflixACAJudge``,
  ``MannWhitneyClassifier``): per metric a Mann-Whitney U test of canary against baseline
  per-minute values with a Hodges-Lehmann confidence interval (confidence 0.98); the metric
  is "High" when the interval's lower end exceeds ``fraction`` (0.25) x |HL estimate|. The
  score is 100 x the share of metrics not High; the canary fails when the score is below
  ``marginal`` (75) or a *critical* metric is High. It is re-run at every minute boundary on
  all minutes since the start — how a team watching a canary uses it — so its error rates
  are those of a fixed-sample test applied over and over. Kayenta's IQR outlier removal is
  not reproduced.
- :class:`FlaggerJudge` follows Flagger's analysis loop (Argo Rollouts' AnalysisRun is
  alike): every ``interval_s`` (1 min) each metric of the last minute is checked against
  absolute limits (error rate ≤ 5 %, i.e. request-success-rate ≥ 95 %; p99 ≤ 10 s) and,
  optionally, relative to the baseline's same minute (canary ≤ 1.2 x baseline); a failed
  check increments the failed-checks counter, and ``threshold`` (5) failed checks roll back.
  Flagger never resets the counter during an analysis; ``consecutive=True`` resets it on
  every passing check instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt
from scipy.stats import mannwhitneyu, norm

from schemas.judgement import Verdict
from schemas.window_stats import LATENCY_BUCKET_COUNT, WindowStats, quantile_from_buckets

FloatArray = npt.NDArray[np.float64]

MINUTE_S = 60
METRICS = (
    "error_rate",
    "task_failure_rate",
    "tool_error_rate",
    "latency_p95_ms",
    "latency_p99_ms",
    "cost_per_request",
    "quality_shortfall",
)
"""Per-minute metrics both baseline judges watch; higher is worse for every one."""

# Scalar sums kept per minute, in this order.
_FIELDS = (
    "requests",
    "errors",
    "tasks_attempted",
    "tasks_completed",
    "tool_calls",
    "tool_errors",
    "cost_sum",
    "quality_count",
    "quality_sum",
)


@dataclass(frozen=True)
class BaselineDecision:
    """What a baseline judge says after a window: the verdict and why."""

    verdict: Verdict
    explanation: str


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else math.nan


def minute_values(sums: FloatArray, buckets: npt.NDArray[np.int64]) -> FloatArray:
    """The :data:`METRICS` of one arm's minute (NaN where the minute has no data)."""
    req, err, att, comp, tools, tool_err, cost, n_q, q = (float(x) for x in sums)
    has_requests = int(buckets.sum()) > 0
    return np.array(
        [
            _ratio(err, req),
            _ratio(att - comp, att),
            _ratio(tool_err, tools),
            quantile_from_buckets(buckets.tolist(), 0.95) if has_requests else math.nan,
            quantile_from_buckets(buckets.tolist(), 0.99) if has_requests else math.nan,
            _ratio(cost, req),  # every span's cost over the requests, as a dashboard shows
            1.0 - _ratio(q, n_q),
        ]
    )


class MinuteSeries:
    """Per-minute metric values of both arms, closed as ``now`` passes each minute's end."""

    def __init__(self) -> None:
        self._origin: float | None = None
        self._next_minute = 0
        self._open: dict[tuple[int, int], tuple[FloatArray, npt.NDArray[np.int64]]] = {}
        self.values: tuple[list[FloatArray], list[FloatArray]] = ([], [])
        """Closed minutes' :func:`minute_values`, for (baseline, canary)."""
        self.late_windows = 0

    def add(self, arm: int, stats: WindowStats | None) -> None:
        if stats is None:
            return
        start = stats.window_start.timestamp()
        if self._origin is None:
            self._origin = start - start % MINUTE_S
        minute = int((start - self._origin) // MINUTE_S)
        if minute < self._next_minute:
            self.late_windows += 1
            return
        sums, buckets = self._open.get(
            (arm, minute),
            (np.zeros(len(_FIELDS)), np.zeros(LATENCY_BUCKET_COUNT, dtype=np.int64)),
        )
        row = np.array([float(getattr(stats, name)) for name in _FIELDS])
        self._open[(arm, minute)] = (sums + row, buckets + np.asarray(stats.latency_buckets))

    def close(self, now: datetime) -> int:
        """Close every minute that ended by ``now``; returns how many were closed."""
        if self._origin is None:
            return 0
        closed = 0
        while self._origin + (self._next_minute + 1) * MINUTE_S <= now.timestamp():
            for arm in (0, 1):
                sums, buckets = self._open.pop(
                    (arm, self._next_minute),
                    (np.zeros(len(_FIELDS)), np.zeros(LATENCY_BUCKET_COUNT, dtype=np.int64)),
                )
                self.values[arm].append(minute_values(sums, buckets))
            self._next_minute += 1
            closed += 1
        return closed


def hodges_lehmann_interval(
    canary: FloatArray, baseline: FloatArray, confidence: float
) -> tuple[float, float, float]:
    """Hodges-Lehmann estimate of the shift canary - baseline and its distribution-free
    confidence interval from the Mann-Whitney statistic's normal approximation (Hollander &
    Wolfe, Nonparametric Statistical Methods, §4.3): with m·n pairwise differences sorted,
    k = floor(mn/2 - z·sqrt(mn(m+n+1)/12)) and the interval is [D_(k), D_(mn+1-k)]; it is
    unbounded when k < 1. Returns (lower, estimate, upper)."""
    diffs = np.subtract.outer(canary, baseline).ravel()
    m, n = canary.size, baseline.size
    mn = m * n
    z = float(norm.ppf(0.5 + confidence / 2))
    k = math.floor(mn / 2 - z * math.sqrt(mn * (m + n + 1) / 12))
    estimate = float(np.median(diffs))
    if k < 1:
        return -math.inf, estimate, math.inf
    ordered = np.partition(diffs, (k - 1, mn - k))
    return float(ordered[k - 1]), estimate, float(ordered[mn - k])


@dataclass(frozen=True)
class KayentaConfig:
    """Netflix ACA judge defaults; ``critical`` metrics fail the canary on their own."""

    confidence: float = 0.98
    fraction: float = 0.25
    marginal: float = 75.0
    min_minutes: int = 3
    critical: frozenset[str] = frozenset(METRICS)
    """Every metric critical by default: with seven metrics and no critical ones a single
    High metric leaves the score at 86 ≥ 75, so a cost or quality regression alone could never
    fail the canary. Pass ``frozenset()`` for score-only judging."""
    screen_p: float = 0.05
    """The HL interval is only computed when the two-sided Mann-Whitney p-value is below this
    (an interval at 0.98 that excludes zero implies p < 0.02): the same verdicts, cheaper."""


def _high(canary: FloatArray, baseline: FloatArray, p_value: float, config: KayentaConfig) -> bool:
    if not p_value < config.screen_p:  # also False for NaN (constant data)
        return False
    lower, estimate, _ = hodges_lehmann_interval(canary, baseline, config.confidence)
    return lower > config.fraction * abs(estimate)


def classify_metric(canary: FloatArray, baseline: FloatArray, config: KayentaConfig) -> bool:
    """Kayenta's ``MannWhitneyClassifier`` for an increase: True when the metric is High."""
    canary = canary[np.isfinite(canary)]
    baseline = baseline[np.isfinite(baseline)]
    if min(canary.size, baseline.size) < config.min_minutes:
        return False
    if canary.size == baseline.size and np.array_equal(canary, baseline):
        return False
    if np.ptp(np.concatenate((canary, baseline))) == 0:
        return False
    result = mannwhitneyu(canary, baseline, alternative="two-sided", method="asymptotic")
    return _high(canary, baseline, float(result.pvalue), config)


def classify_metrics(canary: FloatArray, baseline: FloatArray, config: KayentaConfig) -> list[bool]:
    """:func:`classify_metric` for every column (metric) of minutes x metrics arrays; one
    vectorised Mann-Whitney call when no minute is missing a value."""
    if not (np.isfinite(canary).all() and np.isfinite(baseline).all()):
        return [
            classify_metric(canary[:, j], baseline[:, j], config) for j in range(canary.shape[1])
        ]
    if min(canary.shape[0], baseline.shape[0]) < config.min_minutes:
        return [False] * canary.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        p_values = mannwhitneyu(
            canary, baseline, alternative="two-sided", method="asymptotic", axis=0
        ).pvalue
    return [
        not np.array_equal(canary[:, j], baseline[:, j])
        and _high(canary[:, j], baseline[:, j], float(p_values[j]), config)
        for j in range(canary.shape[1])
    ]


class KayentaJudge:
    """Kayenta-style judge re-run at every minute boundary on all minutes so far."""

    def __init__(self, config: KayentaConfig = KayentaConfig()) -> None:
        self.config = config
        self._series = MinuteSeries()
        self._failed: BaselineDecision | None = None
        self._last = BaselineDecision(Verdict.CONTINUE, "no complete minute yet")

    def observe(
        self, baseline: WindowStats | None, canary: WindowStats | None, now: datetime
    ) -> BaselineDecision:
        if self._failed is not None:
            return self._failed
        self._series.add(0, baseline)
        self._series.add(1, canary)
        if self._series.close(now):
            self._last = self._judge()
            if self._last.verdict is Verdict.ROLLBACK:
                self._failed = self._last
        return self._last

    def _judge(self) -> BaselineDecision:
        base = np.vstack(self._series.values[0])
        can = np.vstack(self._series.values[1])
        flags = classify_metrics(can, base, self.config)
        high = [name for name, flag in zip(METRICS, flags, strict=True) if flag]
        score = 100.0 * (1 - len(high) / len(METRICS))
        critical = [name for name in high if name in self.config.critical]
        minutes = base.shape[0]
        if score < self.config.marginal or critical:
            return BaselineDecision(
                Verdict.ROLLBACK, f"score {score:.0f} after {minutes} min; high: {high}"
            )
        return BaselineDecision(Verdict.CONTINUE, f"score {score:.0f} after {minutes} min")


@dataclass(frozen=True)
class FlaggerConfig:
    """Flagger analysis settings (defaults: interval 1 min, threshold 5)."""

    threshold: int = 5
    consecutive: bool = False
    max_error_rate: float = 0.05
    max_latency_p99_ms: float = 10_000.0
    relative_factor: float | None = 1.2
    """Fail a check when a canary metric exceeds this multiple of the baseline's; None turns
    the relative checks off (absolute limits only, Flagger's built-in metrics)."""
    relative_metrics: tuple[str, ...] = field(default_factory=lambda: METRICS)


def failed_checks(canary: FloatArray, baseline: FloatArray, config: FlaggerConfig) -> list[str]:
    """The names of the limits one minute's canary (and baseline) values break. A canary with
    no requests in the minute fails (Flagger treats "no values found" as a failed check)."""
    named = dict(zip(METRICS, canary, strict=True))
    if not math.isfinite(named["error_rate"]):
        return ["no canary traffic"]
    failed = []
    if named["error_rate"] > config.max_error_rate:
        failed.append("error_rate > absolute limit")
    if named["latency_p99_ms"] > config.max_latency_p99_ms:
        failed.append("latency_p99_ms > absolute limit")
    if config.relative_factor is not None:
        base = dict(zip(METRICS, baseline, strict=True))
        for name in config.relative_metrics:
            value, reference = named[name], base[name]
            finite = math.isfinite(value) and math.isfinite(reference)
            if finite and value > config.relative_factor * reference:
                failed.append(f"{name} > {config.relative_factor} x baseline")
    return failed


class FlaggerJudge:
    """Flagger/Argo-style threshold checks on the last minute, with a failed-checks limit."""

    def __init__(self, config: FlaggerConfig = FlaggerConfig()) -> None:
        self.config = config
        self._series = MinuteSeries()
        self._failures = 0
        self._last = BaselineDecision(Verdict.CONTINUE, "no check yet")

    def observe(
        self, baseline: WindowStats | None, canary: WindowStats | None, now: datetime
    ) -> BaselineDecision:
        if self._last.verdict is Verdict.ROLLBACK:
            return self._last
        self._series.add(0, baseline)
        self._series.add(1, canary)
        for back in range(self._series.close(now), 0, -1):
            failed = failed_checks(
                self._series.values[1][-back], self._series.values[0][-back], self.config
            )
            if failed:
                self._failures += 1
            elif self.config.consecutive:
                self._failures = 0
            if self._failures >= self.config.threshold:
                self._last = BaselineDecision(
                    Verdict.ROLLBACK, f"{self._failures} failed checks; last: {failed}"
                )
                break
            self._last = BaselineDecision(Verdict.CONTINUE, f"{self._failures} failed checks")
        return self._last
