"""The detector's public value types: metrics, verdicts, per-metric evidence, decisions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from schemas.judgement import Metric, Verdict


@dataclass(frozen=True)
class MetricEvidence:
    """One metric's evidence at one decision.

    For rate metrics ``effect``, ``cs_lower`` and ``cs_upper`` are the ratio of the bad-event
    rate canary / baseline (1 = equal). For mean metrics they are the difference of means
    canary - baseline (for ``log_cost_mean`` a log cost ratio; for ``quality_mean`` negative
    is worse). ``e_value`` is the current value of the one-sided (canary worse) e-process and
    ``threshold`` the value its running maximum must reach for this metric's verdict to be
    ROLLBACK (1 / (alpha_rollback x the metric's weight)); the anytime-valid p-value is
    min(1, 1 / running max). ``cs_lower``/``cs_upper`` bound the effect at level
    ``alpha_pass`` uniformly over time (infinite or zero when there is no data yet). For the
    drift detector, the baseline is the version's trailing reference, the canary its latest
    window, ``e_value`` the e-detector statistic and ``threshold`` its alarm level; it
    reports no confidence sequence (bounds are the whole range).
    """

    metric: Metric
    estimate_baseline: float
    estimate_canary: float
    effect: float
    e_value: float
    cs_lower: float
    cs_upper: float
    n_baseline: int
    n_canary: int
    threshold: float
    verdict: Verdict
    explanation: str


@dataclass(frozen=True)
class Decision:
    """A judge's answer after one ``observe`` call: the overall verdict and the evidence."""

    verdict: Verdict
    metrics: tuple[MetricEvidence, ...]
    now: datetime
    explanation: str
    windows_compared: int = 0
    """Window pairs (or, for drift, windows) folded into the statistics so far."""
    windows_unpaired: int = 0
    """Windows that expired without the other arm ever arriving (no information for a
    paired comparison; counted, never silently dropped)."""
