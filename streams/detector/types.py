"""The detector's public value types: metrics, verdicts, per-metric evidence, decisions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Verdict(StrEnum):
    """What a judge says after a window.

    Ordered by severity for aggregation: ROLLBACK > ALERT > INCONCLUSIVE > CONTINUE > PASS
    (a decision is PASS only when every enabled metric passes).
    """

    CONTINUE = "continue"
    """Not enough evidence either way yet; keep watching."""
    ALERT = "alert"
    """Evidence that the canary is worse at the looser alert level (``alpha_alert``)."""
    ROLLBACK = "rollback"
    """Evidence at the rollback level (``alpha_rollback``); the minimum-evidence guards hold.
    Latched: once returned, a judge keeps returning it."""
    PASS = "pass"
    """Every enabled metric's confidence sequence excludes a degradation beyond its tolerance:
    the canary is shown not worse, and a controller may promote."""
    INCONCLUSIVE = "inconclusive"
    """The configured horizon (``JudgeConfig.horizon_s``) has passed with neither a rollback
    nor a pass: at the tolerances asked for, this much traffic cannot tell. A controller
    should hold the rollout or ask a person."""


class Metric(StrEnum):
    """What the judges compare. Rate metrics count a *bad* event, so higher is always worse."""

    ERROR_RATE = "error_rate"
    """Failed requests per request."""
    TASK_FAILURE_RATE = "task_failure_rate"
    """Attempted tasks not completed per attempted task (1 - task completion rate)."""
    TOOL_ERROR_RATE = "tool_error_rate"
    """Failed tool calls per tool call."""
    LATENCY_P95_EXCEEDANCE = "latency_p95_exceedance"
    """Share of requests slower than the baseline's p95, frozen before the comparison."""
    LATENCY_P99_EXCEEDANCE = "latency_p99_exceedance"
    """Share of requests slower than the baseline's p99, frozen before the comparison."""
    LATENCY_LOG_MEAN = "latency_log_mean"
    """Mean of log latency (from the histogram), a whole-distribution shift."""
    LOG_COST_MEAN = "log_cost_mean"
    """Mean of ln(cost + 1e-6 USD) per request; a difference is a log cost ratio."""
    QUALITY_MEAN = "quality_mean"
    """Mean quality score in [0, 1]; lower is worse."""


RATE_METRICS = frozenset(
    {
        Metric.ERROR_RATE,
        Metric.TASK_FAILURE_RATE,
        Metric.TOOL_ERROR_RATE,
        Metric.LATENCY_P95_EXCEEDANCE,
        Metric.LATENCY_P99_EXCEEDANCE,
    }
)
MEAN_METRICS = frozenset({Metric.LATENCY_LOG_MEAN, Metric.LOG_COST_MEAN, Metric.QUALITY_MEAN})


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
