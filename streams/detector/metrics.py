"""What each metric reads from a window: (bad events, trials) or (count, sum, sum of squares)."""

from __future__ import annotations

import numpy as np

from schemas.judgement import Metric
from schemas.window_stats import LATENCY_BUCKET_COUNT, WindowStats, bucket_representative_ms

LOG_LATENCY_MS = np.log(
    np.array([bucket_representative_ms(i) for i in range(LATENCY_BUCKET_COUNT)])
)
"""ln of each latency bucket's representative value: log latency as read from a histogram."""
_LOG_LATENCY_SQ = LOG_LATENCY_MS**2


def rate_counts(
    stats: WindowStats, metric: Metric, threshold_bucket: int | None
) -> tuple[int, int]:
    """(bad events, trials) of a rate metric in one window."""
    if metric is Metric.ERROR_RATE:
        return stats.errors, stats.requests
    if metric is Metric.TASK_FAILURE_RATE:
        return stats.tasks_attempted - stats.tasks_completed, stats.tasks_attempted
    if metric is Metric.TOOL_ERROR_RATE:
        return stats.tool_errors, stats.tool_calls
    if metric is Metric.APPROVAL_RATE:  # a count per request, not a share: Poisson-like
        return stats.approvals_asked, stats.requests
    if threshold_bucket is None:
        raise ValueError(f"{metric} needs a frozen latency threshold")
    return sum(stats.latency_buckets[threshold_bucket + 1 :]), stats.requests


def mean_sums(stats: WindowStats, metric: Metric) -> tuple[int, float, float]:
    """(count, sum, sum of squares) of a mean metric in one window."""
    if metric is Metric.LOG_COST_MEAN:  # per priced request: a loop of calls moves it
        return stats.request_cost_count, stats.request_log_cost_sum, stats.request_log_cost_sumsq
    if metric is Metric.QUALITY_MEAN:
        return stats.quality_count, stats.quality_sum, stats.quality_sumsq
    if metric is Metric.LATENCY_LOG_MEAN:
        counts = np.asarray(stats.latency_buckets, dtype=np.float64)
        return stats.requests, float(counts @ LOG_LATENCY_MS), float(counts @ _LOG_LATENCY_SQ)
    raise ValueError(f"{metric} is not a mean metric")
