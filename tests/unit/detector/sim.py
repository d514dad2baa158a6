"""A small, seeded, per-request simulator of WindowStats for the detector's unit tests.

Each request draws its own outcome (numpy, vectorised per window), so the windows are exact
aggregates of simulated requests: error ~ Bernoulli(p), task completed ~ Bernoulli(0.9),
2 tool calls with 2 % errors, lognormal latency (median 1.5 s, log-sd 0.5), one llm call per
request (``llm_calls_per_request``) each with a lognormal cost (median $0.01, log-sd 0.8), a
request costing the sum of its calls, Beta(8, 2) quality, and no approvals asked unless the
arm asks (``approvals_per_request``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from schemas.window_stats import WindowStats, latency_histogram, log_cost

EPOCH = datetime(2026, 1, 5, tzinfo=UTC)
WINDOW_S = 5


@dataclass(frozen=True)
class Arm:
    """How one arm's requests behave in one window."""

    error_rate: float = 0.01
    latency_factor: float = 1.0
    cost_factor: float = 1.0
    quality_shift: float = 0.0
    llm_calls_per_request: int = 1
    approvals_per_request: float = 0.0
    """Tool calls held for a person's approval per request (Poisson, drawn only when > 0)."""


def window_start(i: int) -> datetime:
    return EPOCH + timedelta(seconds=WINDOW_S * i)


def window(
    rng: np.random.Generator,
    i: int,
    version: str,
    requests: float,
    arm: Arm,
    *,
    source: str = "sim",
) -> WindowStats:
    """Window ``i`` of ``version`` with Poisson(``requests``) requests behaving like ``arm``."""
    n = int(rng.poisson(requests))
    latency = np.exp(rng.normal(math.log(1500.0 * arm.latency_factor), 0.5, size=n))
    calls = arm.llm_calls_per_request
    call_costs = np.exp(rng.normal(math.log(0.01 * arm.cost_factor), 0.8, size=(n, calls)))
    quality = np.clip(rng.beta(8.0, 2.0, size=n) + arm.quality_shift, 0.0, 1.0)
    cost = call_costs.ravel()
    log_costs = _log_costs(cost)
    totals = call_costs.sum(axis=1)
    log_totals = _log_costs(totals)
    tool_calls = int(rng.poisson(2.0 * n))
    asked = int(rng.poisson(arm.approvals_per_request * n)) if arm.approvals_per_request else 0
    return WindowStats(
        agent="agent",
        version=version,
        window_start=window_start(i),
        window_seconds=WINDOW_S,
        source=source,
        requests=n,
        errors=int(rng.binomial(n, min(arm.error_rate, 1.0))),
        tasks_attempted=n,
        tasks_completed=int(rng.binomial(n, 0.9)),
        tool_calls=tool_calls,
        tool_errors=int(rng.binomial(tool_calls, 0.02)),
        llm_calls=n * calls,
        cost_count=n * calls,
        cost_sum=float(cost.sum()),
        cost_sumsq=float(np.square(cost).sum()),
        log_cost_sum=float(log_costs.sum()),
        log_cost_sumsq=float(np.square(log_costs).sum()),
        request_cost_count=n,
        request_cost_sum=float(totals.sum()),
        request_log_cost_sum=float(log_totals.sum()),
        request_log_cost_sumsq=float(np.square(log_totals).sum()),
        quality_count=n,
        quality_sum=float(quality.sum()),
        quality_sumsq=float(np.square(quality).sum()),
        approvals_asked=asked,
        latency_sum_ms=float(latency.sum()),
        latency_buckets=latency_histogram(latency),
    )


def _log_costs(cost: np.ndarray) -> np.ndarray:
    return np.array([log_cost(c) for c in cost]) if cost.size < 64 else np.log(cost + 1e-6)
