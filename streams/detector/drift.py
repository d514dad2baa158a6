"""DriftDetector: one version against its own trailing history (silent regressions).

A pinned version can still get worse: a provider changes the model under it, a tool's API
slows down, prices move. The detector keeps, per metric, an exponentially weighted trailing
*reference* of the version's own windows (kept ``reference_lag_windows`` behind, so a change
has time to be caught before it leaks into the reference) and runs a mixture-of-CUSUMs
e-detector (:class:`~streams.detector.stats.MixtureCusum`) of each new window against it:

- rates (errors, task failures, tool errors, latency above the reference's p95): binomial
  likelihood ratios for rate ratios ``rate_ratios`` against the reference rate;
- means (log latency from the histogram, log cost, quality): Gaussian likelihood ratios for
  shifts of ``mean_shifts`` reference standard deviations in the worse direction.

False alarms are stated as an average run length. Metric m alarms when its mixture statistic
reaches ``arl0_windows`` / w_m with weights w_m summing to at most 1; the sum over metrics
of w_m times the statistics is dominated by a mixture of Shiryaev-Roberts e-detectors, so by
Shin, Ramdas & Rinaldo (2024, "E-detectors") the mean time to the first false alarm of any
metric is at least ``arl0_windows`` windows (Ville's inequality applied to the SR martingale
M_t - t). The bound assumes the reference estimates are the pre-change truth; it is
approximate for a plug-in reference, hence the minimum reference size and a default
threshold at twice one day of 5 s windows. Slow changes (a diurnal cycle) are partly absorbed
by the reference's half-life, partly reported: that is what a drift detector is for.

Windows: partials of the same window are merged until the window has ended (``now`` >=
window end + ``grace_s``); a partial arriving after its window was processed is processed on
its own and counted in ``late_partials`` (the ARL bound then counts processed units).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

import numpy as np

from schemas.judgement import MEAN_METRICS, Metric, Verdict
from schemas.window_stats import LATENCY_BUCKET_COUNT, WindowStats
from streams.detector.metrics import mean_sums, rate_counts
from streams.detector.stats import MixtureCusum, binomial_log_lr, gaussian_log_lr
from streams.detector.types import Decision, MetricEvidence

WINDOWS_PER_DAY_5S = 17_280

DEFAULT_DRIFT_WEIGHTS: Mapping[Metric, float] = MappingProxyType(
    {
        Metric.ERROR_RATE: 0.35,
        Metric.TASK_FAILURE_RATE: 0.1,
        Metric.TOOL_ERROR_RATE: 0.05,
        Metric.LATENCY_P95_EXCEEDANCE: 0.1,
        Metric.LATENCY_LOG_MEAN: 0.1,
        Metric.LOG_COST_MEAN: 0.15,
        Metric.QUALITY_MEAN: 0.15,
    }
)
"""Shares of the false-alarm budget per metric (sum <= 1); metrics absent here are off."""


@dataclass(frozen=True)
class DriftConfig:
    """Drift detector settings."""

    arl0_windows: float = 2 * WINDOWS_PER_DAY_5S
    """Alarm threshold of the e-detector; the average run length to a false alarm under a
    stationary version is at least this many windows (Shin, Ramdas & Rinaldo 2024)."""
    metric_weights: Mapping[Metric, float] = field(
        default_factory=lambda: dict(DEFAULT_DRIFT_WEIGHTS)
    )
    rate_ratios: tuple[float, ...] = (1.25, 1.5, 2.0, 3.0)
    """Alternatives of the rate CUSUMs (bad-event rate / reference rate), equally weighted."""
    mean_shifts: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4)
    """Alternatives of the mean CUSUMs, in reference standard deviations, equally weighted."""
    reference_half_life_windows: float = 720.0
    """Half-life of the exponentially weighted trailing history (720 x 5 s = 1 h)."""
    reference_lag_windows: int = 60
    """The newest windows are kept out of the reference for this long (5 min at 5 s)."""
    min_reference_requests: int = 20_000
    """No test before the reference holds this many (weighted) requests."""
    min_reference_events: float = 50.0
    """A rate metric is tested only once its reference holds this many bad events."""
    grace_s: float = 0.0
    """Partials of a window are merged until this long after the window's end."""

    def __post_init__(self) -> None:
        if self.arl0_windows <= 1.0:
            raise ValueError("arl0_windows must exceed 1")
        if sum(self.metric_weights.values()) > 1.0 + 1e-9:
            raise ValueError("metric weights must sum to at most 1")
        if any(w <= 0.0 for w in self.metric_weights.values()):
            raise ValueError("metric weights must be positive (leave a metric out to disable it)")


class _Reference:
    """Exponentially weighted sums of a version's windows (decayed once per window added)."""

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.requests = 0.0
        self.rates: dict[Metric, list[float]] = {}
        self.means: dict[Metric, list[float]] = {}
        self.latency = np.zeros(LATENCY_BUCKET_COUNT, dtype=np.float64)

    def add(self, stats: WindowStats, metrics: list[Metric]) -> None:
        d = self.decay
        self.requests = d * self.requests + stats.requests
        self.latency = d * self.latency + np.asarray(stats.latency_buckets, dtype=np.float64)
        for m in metrics:
            if m in MEAN_METRICS:
                values: tuple[float, ...] = mean_sums(stats, m)
                store = self.means
            elif m is Metric.LATENCY_P95_EXCEEDANCE:
                continue
            else:
                values = tuple(float(v) for v in rate_counts(stats, m, None))
                store = self.rates
            old = store.get(m, [0.0] * len(values))
            store[m] = [d * o + v for o, v in zip(old, values, strict=True)]

    def rate(self, m: Metric) -> tuple[float, float]:
        """(events, trials) of a rate metric."""
        events, trials = self.rates.get(m, [0.0, 0.0])
        return events, trials

    def mean_sd(self, m: Metric) -> tuple[float, float, float]:
        """(count, mean, sd) of a mean metric (count 0 when empty)."""
        n, total, sumsq = self.means.get(m, [0.0, 0.0, 0.0])
        if n < 2.0:
            return n, 0.0, 0.0
        mean = total / n
        return n, mean, math.sqrt(max(sumsq / n - mean * mean, 0.0) * n / (n - 1.0))

    def p95(self) -> tuple[int, float]:
        """(bucket of the reference p95, reference share of requests above that bucket)."""
        cumulative = np.cumsum(self.latency)
        total = float(cumulative[-1])
        bucket = int(np.searchsorted(cumulative, 0.95 * total, side="left"))
        return bucket, float(total - cumulative[bucket]) / total


class DriftDetector:
    """Change detector for one (agent, version) against its trailing history (module doc)."""

    def __init__(self, config: DriftConfig = DriftConfig()) -> None:
        self.config = config
        self._metrics = list(config.metric_weights)
        self._reference = _Reference(0.5 ** (1.0 / config.reference_half_life_windows))
        self._lagged: deque[WindowStats] = deque()
        self._ratios = np.asarray(config.rate_ratios, dtype=np.float64)
        self._shifts = np.asarray(config.mean_shifts, dtype=np.float64)
        rate_w = np.full(self._ratios.size, -math.log(self._ratios.size))
        mean_w = np.full(self._shifts.size, -math.log(self._shifts.size))
        self._cusums = {
            m: MixtureCusum(mean_w if m in MEAN_METRICS else rate_w) for m in self._metrics
        }
        self._last: dict[Metric, tuple[float, float, int, float]] = {}
        self._pending: dict[datetime, WindowStats] = {}
        self._processed_through: datetime | None = None
        self._identity: tuple[str, str] | None = None
        self.windows = 0
        self.late_partials = 0

    def observe(self, stats: WindowStats, now: datetime) -> Decision:
        """Fold in one window's partial and decide (see the module docstring for windows).

        Raises ``ValueError`` for a window of another agent or version than the first one.
        """
        identity = (stats.agent, stats.version)
        if self._identity is None:
            self._identity = identity
        elif identity != self._identity:
            raise ValueError(
                f"window of {identity} given to the drift detector of {self._identity}"
            )
        if self._processed_through is not None and stats.window_start <= self._processed_through:
            self.late_partials += 1
            self._process(stats)
        else:
            held = self._pending.get(stats.window_start)
            self._pending[stats.window_start] = stats if held is None else held.merge(stats)
        return self.tick(now)

    def tick(self, now: datetime) -> Decision:
        """Process the windows that have ended (plus ``grace_s``) by ``now`` and decide."""
        grace = timedelta(seconds=self.config.grace_s)
        for start in sorted(self._pending):
            if self._pending[start].window_end + grace <= now:
                self._process(self._pending.pop(start))
                self._processed_through = max(self._processed_through or start, start)
        return self._decide(now)

    def _armed(self) -> bool:
        return self._reference.requests >= self.config.min_reference_requests

    def _process(self, stats: WindowStats) -> None:
        self.windows += 1
        if self._armed():
            for m in self._metrics:
                self._test(m, stats)
        self._lagged.append(stats)
        if len(self._lagged) > self.config.reference_lag_windows:
            self._reference.add(self._lagged.popleft(), self._metrics)

    def _test(self, m: Metric, stats: WindowStats) -> None:
        ref = self._reference
        if m in MEAN_METRICS:
            n_ref, mu0, sd0 = ref.mean_sd(m)
            n, total, _ = mean_sums(stats, m)
            if n == 0 or sd0 <= 0.0:
                return
            sign = -1.0 if m is Metric.QUALITY_MEAN else 1.0
            log_lr = gaussian_log_lr(n, total / n, mu0, sd0, sign * self._shifts)
            self._cusums[m].update(log_lr)
            self._last[m] = (mu0, total / n, n, n_ref)
            return
        if m is Metric.LATENCY_P95_EXCEEDANCE:
            bucket, p0 = ref.p95()
            x, n = rate_counts(stats, m, bucket)
            ref_events, ref_trials = p0 * ref.requests, ref.requests
        else:
            x, n = rate_counts(stats, m, None)
            ref_events, ref_trials = ref.rate(m)
            p0 = (ref_events + 0.5) / (ref_trials + 1.0)
        if n == 0 or ref_events < self.config.min_reference_events or not 0.0 < p0 < 1.0:
            return
        self._cusums[m].update(binomial_log_lr(x, n, p0, self._ratios))
        self._last[m] = (p0, x / n, n, ref_trials)

    def _decide(self, now: datetime) -> Decision:
        evidence = tuple(self._evidence(m) for m in self._metrics if m in self._last)
        alarms = sorted(e.metric for e in evidence if e.verdict is Verdict.ALERT)
        if alarms:
            verdict, text = Verdict.ALERT, "drift from the trailing history on " + ", ".join(alarms)
        elif not self._armed():
            verdict, text = Verdict.CONTINUE, "building the trailing reference"
        else:
            verdict, text = Verdict.CONTINUE, "no drift from the trailing history"
        return Decision(
            verdict=verdict,
            metrics=evidence,
            now=now,
            explanation=text,
            windows_compared=self.windows,
            windows_unpaired=self.late_partials,
        )

    def _evidence(self, m: Metric) -> MetricEvidence:
        reference, current, n, n_ref = self._last[m]
        threshold = self.config.arl0_windows / self.config.metric_weights[m]
        log_stat = self._cusums[m].log_statistic()
        verdict = Verdict.ALERT if log_stat >= math.log(threshold) else Verdict.CONTINUE
        is_mean = m in MEAN_METRICS
        effect = current - reference if is_mean else current / reference
        return MetricEvidence(
            metric=m,
            estimate_baseline=reference,
            estimate_canary=current,
            effect=effect,
            e_value=math.exp(min(log_stat, 700.0)),
            cs_lower=-math.inf if is_mean else 0.0,
            cs_upper=math.inf,
            n_baseline=round(n_ref),
            n_canary=int(n),
            threshold=threshold,
            verdict=verdict,
            explanation=f"{m}: last window {current:.4g} vs trailing {reference:.4g}, "
            f"e-detector {math.exp(min(log_stat, 700.0)):.3g} (alarm at {threshold:.3g})"
            f" -> {verdict}",
        )
