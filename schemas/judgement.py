"""The judge's word on a canary (``coalmine.judgements``, key = agent): one event per compared
window of a canary deployment, with every metric's evidence, and the vocabulary of verdicts and
metrics the detector, the controller and the alerts share.

Numbers that are unbounded (a confidence-sequence bound before any data) are ``None`` on the
wire: JSON has no infinity.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from schemas.trace import Identifier

MAX_EXPLANATION_CHARS = 1024

Explanation = Annotated[str, StringConstraints(max_length=MAX_EXPLANATION_CHARS)]
EventId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[0-9A-Za-z_.:-]+$")
]
"""A deterministic id: the same decision made again (after a restart) has the same id."""
Count = Annotated[int, Field(ge=0)]


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
    APPROVAL_RATE = "approval_rate"
    """Tool calls held for a person's approval per request (a request may ask several times;
    only agents whose versions have approval policies ask at all)."""
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
        Metric.APPROVAL_RATE,
        Metric.LATENCY_P95_EXCEEDANCE,
        Metric.LATENCY_P99_EXCEEDANCE,
    }
)
"""Metrics counting a bad event: estimates are rates, effects rate ratios."""
COUNT_PER_TRIAL_METRICS = frozenset({Metric.APPROVAL_RATE})
"""Rate metrics whose events are not a share of their trials (a request may ask for several
approvals): their estimates read as a number per trial, not a percentage."""
MEAN_METRICS = frozenset({Metric.LATENCY_LOG_MEAN, Metric.LOG_COST_MEAN, Metric.QUALITY_MEAN})
"""Metrics averaging a value: effects are differences of means."""
METRIC_WORDS = {
    Metric.ERROR_RATE: "error rate",
    Metric.TASK_FAILURE_RATE: "task failure rate",
    Metric.TOOL_ERROR_RATE: "tool error rate",
    Metric.APPROVAL_RATE: "approvals asked per request",
    Metric.LATENCY_P95_EXCEEDANCE: "share slower than the baseline's p95",
    Metric.LATENCY_P99_EXCEEDANCE: "share slower than the baseline's p99",
    Metric.LATENCY_LOG_MEAN: "mean log latency",
    Metric.LOG_COST_MEAN: "mean log cost per request",
    Metric.QUALITY_MEAN: "mean quality",
}
"""A metric in words, as alerts and the status page name it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class MetricEvidenceRecord(_Strict):
    """One metric's evidence at one judgement (see ``streams.detector.types.MetricEvidence``).

    For rate metrics ``effect`` and the bounds are the rate ratio canary / baseline; for mean
    metrics the difference canary - baseline (for ``quality_mean`` negative is worse).
    """

    metric: Metric
    estimate_baseline: float
    estimate_canary: float
    effect: float | None = Field(description="None when there is no data to estimate it yet.")
    e_value: float = Field(ge=0, description="The one-sided (canary worse) e-process now.")
    cs_lower: float | None = Field(description="None: unbounded below (no data yet).")
    cs_upper: float | None = Field(description="None: unbounded above (no data yet).")
    n_baseline: Count
    n_canary: Count
    threshold: float = Field(gt=0, description="The e-value at which this metric rolls back.")
    tolerance: float | None = Field(
        default=None, description="The largest degradation still accepted for PASS."
    )
    verdict: Verdict
    explanation: Explanation


class Judgement(_Strict):
    """The judge's decision after one compared window of a canary deployment."""

    model_config = ConfigDict(
        json_schema_extra={"$id": "https://coalmine.dev/schemas/judgement.schema.json"}
    )

    id: EventId
    time: AwareDatetime
    agent: Identifier
    rollout_id: EventId = Field(description="The deployment (deploy command) judged.")
    generation: Annotated[int, Field(ge=1)] = Field(
        description="The deployment state's generation the judge was started for."
    )
    stable_version: Identifier
    canary_version: Identifier
    window_end: AwareDatetime = Field(description="End of the latest window compared.")
    windows_compared: Count
    windows_unpaired: Count = 0
    verdict: Verdict
    metrics: tuple[MetricEvidenceRecord, ...]
    explanation: Explanation
    detector: Identifier = "canary_judge"
    parameters: dict[Identifier, float] = Field(
        default_factory=dict, description="alpha_rollback, alpha_alert, alpha_pass, horizon_s…"
    )
