"""What the detector publishes, built from a judge's decision: :class:`Judgement`,
:class:`Alert` and :class:`RollbackCommand` events with deterministic ids and words a person
reads (pure: no I/O, no clock).

Ids are digests of what the event is about, never of when it was made, so the same decision
made again (after a restart, by another worker) carries the same id:

* a judgement: the rollout, the generation, the window and which comparison of that window;
* an alert: the rollout, the generation and the level reached (alert, rollback, inconclusive);
* a rollback command: the rollout and the generation — one per generation, ever.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas.alert import Alert, AlertEvidence, AlertKind, Severity
from schemas.judgement import (
    COUNT_PER_TRIAL_METRICS,
    METRIC_WORDS,
    RATE_METRICS,
    Judgement,
    Metric,
    MetricEvidenceRecord,
    Verdict,
)
from schemas.plan import RolloutPlan
from schemas.rollback import RollbackCommand
from streams.detector.judge import JudgeConfig
from streams.detector.types import Decision, MetricEvidence

DETECTOR = "canary_judge"
ISSUED_BY = "detector"

_OBSERVATIONS = {Metric.TASK_FAILURE_RATE: "tasks", Metric.TOOL_ERROR_RATE: "tool calls"}
"""What a metric's sample sizes count, when not requests."""


def event_id(kind: str, *parts: str | int) -> str:
    """``kind-<20 hex digits>``: a digest of ``parts``, the same for the same parts."""
    text = "\x1f".join(str(part) for part in parts)
    return f"{kind}-{hashlib.blake2b(text.encode(), digest_size=10).hexdigest()}"


@dataclass(frozen=True)
class Judged:
    """The deployment generation a judge was started for: what its events name."""

    agent: str
    rollout_id: str
    generation: int
    stable_version: str
    canary_version: str
    plan: RolloutPlan

    def judgement_id(self, window_start: datetime, comparison: int) -> str:
        return event_id(
            "judgement", self.rollout_id, self.generation, window_start.isoformat(), comparison
        )

    def time_judgement_id(self, windows_compared: int, verdict: Verdict) -> str:
        """A judgement made by time alone (the horizon), after ``windows_compared``."""
        return event_id(
            "judgement", self.rollout_id, self.generation, "time", windows_compared, verdict.value
        )

    def alert_id(self, level: Verdict) -> str:
        return event_id("alert", self.rollout_id, self.generation, level.value)

    def rollback_id(self) -> str:
        return event_id("rollback", self.rollout_id, self.generation)


def judged_generations(plan: RolloutPlan) -> int:
    """How many generations of a rollout are judged, pauses aside: each step's own and the
    one its latched PASS makes, and for a step needing approval the wait before it."""
    return sum(2 + step.approval for step in plan.steps)


def judge_config(plan: RolloutPlan) -> JudgeConfig:
    """The judge's settings for one generation of a rollout: the defaults with the plan's
    overrides, the rollout's alphas split evenly over its judged generations (Bonferroni), so
    the chance of any false rollback (or alert) over the whole rollout stays within the
    plan's alpha. Windows are paired and timed by the watch, so the judge waits for nothing."""
    overrides = plan.judge
    base = JudgeConfig()
    share = judged_generations(plan)
    return JudgeConfig(
        alpha_rollback=(overrides.alpha_rollback or base.alpha_rollback) / share,
        alpha_alert=(overrides.alpha_alert or base.alpha_alert) / share,
        tolerances={**base.tolerances, **overrides.tolerances},
        horizon_s=overrides.horizon_s,
        grace_s=0.0,
    )


def parameters(config: JudgeConfig) -> dict[str, float]:
    values = {
        "alpha_rollback": config.alpha_rollback,
        "alpha_alert": config.alpha_alert,
        "alpha_pass": config.alpha_pass,
    }
    if config.horizon_s is not None:
        values["horizon_s"] = config.horizon_s
    return values


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def evidence_record(evidence: MetricEvidence, config: JudgeConfig) -> MetricEvidenceRecord:
    return MetricEvidenceRecord(
        metric=evidence.metric,
        estimate_baseline=evidence.estimate_baseline,
        estimate_canary=evidence.estimate_canary,
        effect=_finite(evidence.effect),
        e_value=evidence.e_value,
        cs_lower=_finite(evidence.cs_lower),
        cs_upper=_finite(evidence.cs_upper),
        n_baseline=evidence.n_baseline,
        n_canary=evidence.n_canary,
        threshold=evidence.threshold,
        tolerance=config.tolerances.get(evidence.metric),
        verdict=evidence.verdict,
        explanation=evidence.explanation[:1024],
    )


def judgement(
    judged: Judged,
    decision: Decision,
    config: JudgeConfig,
    *,
    id: str,
    window_end: datetime,
    time: datetime,
) -> Judgement:
    return Judgement(
        id=id,
        time=time,
        agent=judged.agent,
        rollout_id=judged.rollout_id,
        generation=judged.generation,
        stable_version=judged.stable_version,
        canary_version=judged.canary_version,
        window_end=window_end,
        windows_compared=decision.windows_compared,
        windows_unpaired=decision.windows_unpaired,
        verdict=decision.verdict,
        metrics=tuple(evidence_record(e, config) for e in decision.metrics),
        explanation=decision.explanation[:1024],
        parameters=parameters(config),
    )


def alert_threshold(evidence: MetricEvidence, config: JudgeConfig, level: Verdict) -> float:
    """The e-value at which ``evidence``'s metric reaches ``level`` (ALERT or ROLLBACK)."""
    if level is Verdict.ROLLBACK:
        return evidence.threshold
    return 1.0 / (config.alpha_alert * config.metric_weights[evidence.metric])


def worst_metric(decision: Decision, config: JudgeConfig, level: Verdict) -> MetricEvidence:
    """The metric at ``level`` whose e-value is furthest past its threshold."""
    at_level = [e for e in decision.metrics if e.verdict is level] or list(decision.metrics)
    return max(at_level, key=lambda e: e.e_value / alert_threshold(e, config, level))


def number(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.3g}"


def metric_words(evidence: MetricEvidence, reference: str = "stable's") -> str:
    """``error rate 6.1% vs 1.0%``, ``latency x1.35 of stable's (geometric mean)``, ...:
    the observed value against the ``reference`` one."""
    metric, canary, baseline = evidence.metric, evidence.estimate_canary, evidence.estimate_baseline
    if metric in COUNT_PER_TRIAL_METRICS:
        return f"{METRIC_WORDS[metric]} {canary:.3g} vs {baseline:.3g}"
    if metric in RATE_METRICS:
        return f"{METRIC_WORDS[metric]} {canary:.1%} vs {baseline:.1%}"
    if metric is Metric.QUALITY_MEAN:
        return f"quality {canary:.3f} vs {baseline:.3f}"
    what = "latency" if metric is Metric.LATENCY_LOG_MEAN else "cost per request"
    ratio = math.exp(evidence.effect) if math.isfinite(evidence.effect) else math.nan
    return f"{what} x{ratio:.2f} of {reference} (geometric mean)"


def evidence_words(evidence: MetricEvidence, threshold: float) -> str:
    """``error rate 6.1% vs 1.0%, e-value 243 > threshold 200 after 1,204 canary requests``."""
    default = "requests" if evidence.metric in RATE_METRICS else "observations"
    unit = _OBSERVATIONS.get(evidence.metric, default)
    return (
        f"{metric_words(evidence)}, e-value {number(evidence.e_value)} > threshold "
        f"{number(threshold)} after {evidence.n_canary:,} canary {unit}"
    )


def regression_alert(
    judged: Judged, decision: Decision, config: JudgeConfig, level: Verdict, time: datetime
) -> Alert:
    """The alert for the judge reaching ALERT or ROLLBACK."""
    worst = worst_metric(decision, config, level)
    threshold = alert_threshold(worst, config, level)
    if level is Verdict.ROLLBACK:
        action = (
            "rolling back" if judged.plan.auto_rollback else "auto_rollback is off: rollout paused"
        )
    else:
        action = f"alert level; rollback at e-value {number(worst.threshold)}"
    message = (
        f"{judged.agent} {judged.canary_version} vs {judged.stable_version}: "
        f"{evidence_words(worst, threshold)}; {action}"
    )
    return _canary_alert(
        judged,
        config,
        level,
        time,
        message,
        metric=worst.metric,
        kind=AlertKind.CANARY_REGRESSION,
        severity=Severity.CRITICAL if level is Verdict.ROLLBACK else Severity.WARNING,
        observed=worst.estimate_canary,
        baseline=worst.estimate_baseline,
        effect=_finite(worst.effect),
        evidence=AlertEvidence(
            statistic=worst.e_value,
            threshold=threshold,
            n_baseline=worst.n_baseline,
            n_canary=worst.n_canary,
        ),
    )


def inconclusive_alert(
    judged: Judged, decision: Decision, config: JudgeConfig, time: datetime
) -> Alert:
    message = (
        f"{judged.agent} {judged.canary_version} vs {judged.stable_version}: "
        f"{decision.explanation} ({decision.windows_compared:,} windows compared); "
        "the rollout pauses for a person to decide"
    )
    return _canary_alert(
        judged,
        config,
        Verdict.INCONCLUSIVE,
        time,
        message,
        kind=AlertKind.INCONCLUSIVE,
        severity=Severity.WARNING,
    )


def _canary_alert(
    judged: Judged,
    config: JudgeConfig,
    level: Verdict,
    time: datetime,
    message: str,
    **about: Any,
) -> Alert:
    """An alert about a judged canary reaching ``level``; ``about``: the kind and evidence."""
    return Alert(
        id=judged.alert_id(level),
        time=time,
        agent=judged.agent,
        version=judged.canary_version,
        baseline_version=judged.stable_version,
        rollout_id=judged.rollout_id,
        generation=judged.generation,
        detector=DETECTOR,
        parameters=parameters(config),
        message=message[:1024],
        **about,
    )


def rollback_command(judged: Judged, alert: Alert, alert_ids: tuple[str, ...]) -> RollbackCommand:
    """The one RollbackCommand of a generation, its reason the ROLLBACK alert's words."""
    return RollbackCommand(
        id=judged.rollback_id(),
        time=alert.time,
        agent=judged.agent,
        from_version=judged.canary_version,
        to_version=None,
        reason=f"detector, generation {judged.generation}: {alert.message}"[:1024],
        alert_ids=alert_ids,
        issued_by=ISSUED_BY,
    )
