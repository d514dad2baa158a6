"""Sequential statistics for canary judgement and drift detection (pure: no I/O, no clock)."""

from schemas.judgement import MEAN_METRICS, RATE_METRICS, Metric, Verdict
from streams.detector.drift import DriftConfig, DriftDetector
from streams.detector.judge import (
    DEFAULT_METRIC_WEIGHTS,
    DEFAULT_TOLERANCES,
    CanaryJudge,
    JudgeConfig,
)
from streams.detector.types import Decision, MetricEvidence

__all__ = [
    "DEFAULT_METRIC_WEIGHTS",
    "DEFAULT_TOLERANCES",
    "MEAN_METRICS",
    "RATE_METRICS",
    "CanaryJudge",
    "Decision",
    "DriftConfig",
    "DriftDetector",
    "JudgeConfig",
    "Metric",
    "MetricEvidence",
    "Verdict",
]
