"""Detector events made by hand with the schemas: a canary's judgements, its alert and the
rollback request, as the detector would emit them for one rollout."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.alert import Alert, AlertEvidence, AlertKind, Severity
from schemas.judgement import Judgement, Metric, MetricEvidenceRecord, Verdict
from schemas.rollback import RollbackCommand

DEPLOYED_AT = datetime(2026, 12, 2, 13, 0, tzinfo=UTC)


def evidence(verdict: Verdict, e_value: float, n: int) -> MetricEvidenceRecord:
    return MetricEvidenceRecord(
        metric=Metric.ERROR_RATE,
        estimate_baseline=0.010,
        estimate_canary=0.021,
        effect=2.1 if n else None,
        e_value=e_value,
        cs_lower=1.4 if n else None,
        cs_upper=None,
        n_baseline=9 * n,
        n_canary=n,
        threshold=100.0,
        tolerance=1.2,
        verdict=verdict,
        explanation=f"error rate e-value {e_value:g}",
    )


def judgement(
    seconds: float, verdict: Verdict, e_value: float = 1.0, *, agent: str = "support-bot",
    rollout_id: str = "cmd-1", n: int = 1000,
) -> Judgement:  # fmt: skip
    at = DEPLOYED_AT + timedelta(seconds=seconds)
    return Judgement(
        id=f"judgement-{rollout_id}-{seconds:g}",
        time=at,
        agent=agent,
        rollout_id=rollout_id,
        generation=1,
        stable_version="v1",
        canary_version="v2",
        window_end=at - timedelta(seconds=2),
        windows_compared=int(seconds // 5),
        verdict=verdict,
        metrics=(
            evidence(verdict, e_value, n),
            evidence(Verdict.CONTINUE, 0.5, n).model_copy(update={"metric": Metric.QUALITY_MEAN}),
        ),
        explanation=f"{verdict.value} after {seconds:g} s",
        parameters={"alpha_rollback": 0.01, "horizon_s": 600.0},
    )


def regression_alert(
    seconds: float = 60, *, agent: str = "support-bot", rollout_id: str | None = "cmd-1",
    alert_id: str = "alert-1", severity: Severity = Severity.CRITICAL,
) -> Alert:  # fmt: skip
    return Alert(
        id=alert_id,
        time=DEPLOYED_AT + timedelta(seconds=seconds),
        agent=agent,
        version="v2",
        baseline_version="v1",
        rollout_id=rollout_id,
        generation=1,
        metric=Metric.ERROR_RATE,
        kind=AlertKind.CANARY_REGRESSION,
        severity=severity,
        observed=0.021,
        baseline=0.010,
        effect=2.1,
        evidence=AlertEvidence(
            statistic=143.2, threshold=100.0, n_baseline=100_836, n_canary=11_204
        ),
        detector="canary_judge",
        parameters={"alpha_rollback": 0.01},
        message=(
            f"{agent} v2 vs v1: error rate 2.1% vs 1.0%, e-value 143 > threshold 100 after "
            "11,204 canary requests; rolling back"
        ),
    )


def drift_alert(seconds: float = 30, *, agent: str = "support-bot") -> Alert:
    return Alert(
        id=f"drift-{agent}-{seconds:g}",
        time=DEPLOYED_AT + timedelta(seconds=seconds),
        agent=agent,
        version="v1",
        metric=Metric.LOG_COST_MEAN,
        kind=AlertKind.COST_SPIKE,
        severity=Severity.WARNING,
        observed=-4.1,
        baseline=-4.6,
        detector="drift",
        message=(
            f"{agent} v1 drifted from its own trailing history: cost per request x1.65 of "
            "its history (geometric mean), e-detector 1,204 > threshold 1,000 after 720 windows"
        ),
    )


def rollback_request(
    seconds: float = 61, *, agent: str = "support-bot", alert_ids: tuple[str, ...] = ("alert-1",),
    request_id: str = "rollback-1",
) -> RollbackCommand:  # fmt: skip
    return RollbackCommand(
        id=request_id,
        time=DEPLOYED_AT + timedelta(seconds=seconds),
        agent=agent,
        from_version="v2",
        reason="error rate 2.1% vs 1.0%",
        alert_ids=alert_ids,
        issued_by="detector",
    )
