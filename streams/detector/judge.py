"""CanaryJudge: is the canary version worse than the baseline, anytime-valid.

Bodies follow in the next commit; the types are the published API.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType

from schemas.window_stats import WindowStats
from streams.detector.types import Decision, Metric

DEFAULT_METRIC_WEIGHTS: Mapping[Metric, float] = MappingProxyType(
    {
        Metric.ERROR_RATE: 0.4,
        Metric.TASK_FAILURE_RATE: 0.1,
        Metric.TOOL_ERROR_RATE: 0.1,
        Metric.LATENCY_P95_EXCEEDANCE: 0.1,
        Metric.LATENCY_P99_EXCEEDANCE: 0.1,
        Metric.LOG_COST_MEAN: 0.1,
        Metric.QUALITY_MEAN: 0.1,
    }
)
"""Weighted Bonferroni shares of alpha per metric (they sum to 1). A metric is judged at
level alpha x weight, i.e. e-value threshold 1 / (alpha x weight). Metrics absent here are off."""

DEFAULT_TOLERANCES: Mapping[Metric, float] = MappingProxyType(
    {
        Metric.ERROR_RATE: 1.25,
        Metric.TASK_FAILURE_RATE: 1.25,
        Metric.TOOL_ERROR_RATE: 1.25,
        Metric.LATENCY_P95_EXCEEDANCE: 1.25,
        Metric.LATENCY_P99_EXCEEDANCE: 1.5,
        Metric.LATENCY_LOG_MEAN: math.log(1.1),
        Metric.LOG_COST_MEAN: math.log(1.1),
        Metric.QUALITY_MEAN: 0.02,
    }
)
"""Largest degradation still acceptable for PASS: for rate metrics the rate ratio canary /
baseline; for log means the log ratio; for quality the drop in mean score."""


@dataclass(frozen=True)
class JudgeConfig:
    """Everything a CanaryJudge decides with. Defaults are tuned for 5 s windows."""

    alpha_rollback: float = 0.01
    """Probability of any false rollback over an unbounded A/A run, all metrics together."""
    alpha_alert: float = 0.05
    """The same for alerts (looser, so alerts come earlier than rollbacks)."""
    metric_weights: Mapping[Metric, float] = field(default_factory=lambda: DEFAULT_METRIC_WEIGHTS)
    tolerances: Mapping[Metric, float] = field(default_factory=lambda: DEFAULT_TOLERANCES)
    min_requests_per_arm: int = 100
    """No ROLLBACK or PASS before each arm has this many requests."""
    min_canary_events: int = 3
    """No rate-metric ROLLBACK before the canary has this many bad events of that metric."""
    min_mean_observations: int = 30
    """Per arm, before a mean metric is tested (its variance is estimated first)."""
    latency_reference_requests: int = 500
    """Baseline requests whose histogram freezes the p95 / p99 thresholds (when no reference
    histogram is given to the judge)."""
    max_lateness_s: float = 60.0
    """A window waiting for the other arm is given up (and counted) this long after its end."""
    horizon_s: float | None = None
    """After this long since the first window without ROLLBACK or PASS: INCONCLUSIVE."""


class CanaryJudge:
    """Sequential canary-versus-baseline judge over window statistics; see module docstring."""

    def __init__(
        self, config: JudgeConfig = JudgeConfig(), latency_reference: list[int] | None = None
    ) -> None:
        self.config = config
        self._latency_reference = latency_reference

    def observe(
        self, baseline: WindowStats | None, canary: WindowStats | None, now: datetime
    ) -> Decision:
        """Fold in the windows that arrived (either may be None) and decide."""
        raise NotImplementedError
