"""Scenario definitions for the detector benchmark: frozen dataclasses and the two grids.

A scenario fixes the traffic of the baseline ("stable") and canary versions, the effect the
canary carries from ``onset_s`` on, the horizon, and how many replications to run. The
headline configuration is a 10 % canary of an agent serving 100 requests/s in total, 5 s
windows, a 1 h horizon (regressions run one hour past their onset).

Nominal traffic of one version (:class:`Traffic`): 1 % errors, 90 % of tasks completed,
two tool calls per request with 2 % tool errors, lognormal latency with median 1.5 s and
log-sd 0.5 (p99 ≈ 4.8 s), one llm call per request with a lognormal cost of median $0.01 and
log-sd 0.8 (a request costs the sum of its calls), and a Beta quality score with mean 0.80
and concentration a + b = 10 (sd ≈ 0.12) on every request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum

WINDOW_SECONDS = 5
"""Width of the simulated aggregation windows; every judge peeks once per window."""
Z_99 = 2.3263478740408408
"""Standard normal 0.99 quantile: a tail-only latency effect multiplies p99 and keeps p50."""

HEADLINE_RPS = 100.0
HEADLINE_SHARE = 0.10
HOUR_S = 3600.0
APPROVALS_SCENARIO = "approvals-x3"
"""The canary's tool calls wait for a person three times as often: 0.05 -> 0.15 per request."""
LOOP_SCENARIO = "llm-calls-x2"
"""The canary loops into twice the llm calls per request, each at the same price: a cost
regression per request that the cost of a span does not show."""


class Family(StrEnum):
    """What a scenario measures."""

    AA = "aa"
    """Canary identical to the baseline: every rollback is a false alarm."""
    REGRESSION = "regression"
    """Canary worse from ``onset_s`` on: detection delay and power."""
    DRIFT = "drift"
    """One version alone, worse from ``onset_s`` on: the drift detector's delay."""
    DRIFT_AA = "drift-aa"
    """One version alone, never changing: the drift detector's run length to a false alarm."""


@dataclass(frozen=True)
class Traffic:
    """Per-request behaviour of one version (see the module docstring for the defaults)."""

    error_rate: float = 0.01
    task_completion: float = 0.90
    tool_calls_per_request: float = 2.0
    tool_error_rate: float = 0.02
    latency_median_ms: float = 1500.0
    latency_sigma: float = 0.5
    cost_median_usd: float = 0.01
    """Median cost of one llm call."""
    cost_sigma: float = 0.8
    llm_calls_per_request: int = 1
    quality_mean: float = 0.80
    quality_concentration: float = 10.0
    approvals_per_request: float = 0.0
    """Mean tool calls held for a person's approval per request (Poisson); none by default."""

    def __post_init__(self) -> None:
        if self.llm_calls_per_request < 1:
            raise ValueError("llm_calls_per_request must be at least 1")

    @property
    def latency_mu(self) -> float:
        """Mean of ln(latency in ms)."""
        return math.log(self.latency_median_ms)

    @property
    def cost_mu(self) -> float:
        """Mean of ln(cost in USD)."""
        return math.log(self.cost_median_usd)


@dataclass(frozen=True)
class Regression:
    """How the canary differs from the baseline after the onset (the identity by default).

    ``latency_factor`` multiplies every latency, or with ``latency_tail_only`` widens the
    log-scale spread so that p99 is multiplied by the factor while the median stays (p95 then
    moves by factor^0.71). ``cost_factor`` multiplies every cost (the median and the mean).
    ``error_rate``, ``llm_calls_per_request`` (an agent looping into more calls, each at
    the same price) and ``approvals_per_request`` replace the baseline's; deltas add to the
    quality mean and task completion.
    """

    error_rate: float | None = None
    latency_factor: float = 1.0
    latency_tail_only: bool = False
    cost_factor: float = 1.0
    quality_delta: float = 0.0
    completion_delta: float = 0.0
    llm_calls_per_request: int | None = None
    approvals_per_request: float | None = None

    def apply(self, traffic: Traffic) -> Traffic:
        """The canary's traffic once the regression is active."""
        median = traffic.latency_median_ms
        sigma = traffic.latency_sigma
        if self.latency_tail_only:
            sigma += math.log(self.latency_factor) / Z_99
        else:
            median *= self.latency_factor
        return replace(
            traffic,
            error_rate=traffic.error_rate if self.error_rate is None else self.error_rate,
            latency_median_ms=median,
            latency_sigma=sigma,
            cost_median_usd=traffic.cost_median_usd * self.cost_factor,
            llm_calls_per_request=traffic.llm_calls_per_request
            if self.llm_calls_per_request is None
            else self.llm_calls_per_request,
            quality_mean=traffic.quality_mean + self.quality_delta,
            task_completion=traffic.task_completion + self.completion_delta,
            approvals_per_request=traffic.approvals_per_request
            if self.approvals_per_request is None
            else self.approvals_per_request,
        )

    @property
    def is_identity(self) -> bool:
        return self == Regression()


@dataclass(frozen=True)
class Scenario:
    """One simulated deployment, replicated ``replications`` times.

    ``rps`` is the agent's total request rate; the canary gets ``share`` of it (for the drift
    families the single version gets all of it). ``diurnal_amplitude`` a makes both the
    request rate and the base error rate follow 1 + a·sin(2πt / ``diurnal_period_s``) (a
    compressed day: the default period is one hour so that a run sees a full cycle).
    ``share_end`` drifts the split linearly from ``share`` to ``share_end`` over the horizon.
    ``missing_window_rate`` drops each arm's window independently (it never arrives).
    """

    name: str
    family: Family
    replications: int
    rps: float = HEADLINE_RPS
    share: float = HEADLINE_SHARE
    onset_s: float = 0.0
    horizon_s: float = HOUR_S
    regression: Regression = field(default_factory=Regression)
    traffic: Traffic = field(default_factory=Traffic)
    diurnal_amplitude: float = 0.0
    diurnal_period_s: float = HOUR_S
    share_end: float | None = None
    missing_window_rate: float = 0.0
    description: str = ""

    @property
    def windows(self) -> int:
        return math.ceil(self.horizon_s / WINDOW_SECONDS)

    @property
    def single_version(self) -> bool:
        return self.family in (Family.DRIFT, Family.DRIFT_AA)

    def describe(self) -> str:
        """One line: what the scenario is, its traffic and its replications."""
        who = "one version" if self.single_version else f"{self.share:.0%} canary"
        text = self.description or self.family.value
        onset = f", onset {self.onset_s / 60:.0f} min" if self.onset_s else ""
        hours = self.horizon_s / HOUR_S
        horizon = f"{hours:g} h" if hours == int(hours) else f"{self.horizon_s / 60:.0f} min"
        return (
            f"{self.name}: {text} ({who} of {self.rps:g} req/s, "
            f"horizon {horizon}{onset}, {self.replications} runs)"
        )

    @property
    def canary_traffic(self) -> Traffic:
        """The canary's traffic after the onset."""
        return self.regression.apply(self.traffic)


def _regressions() -> list[tuple[str, Regression, str]]:
    return [
        ("err-1-2pct", Regression(error_rate=0.02), "errors 1% -> 2%"),
        ("err-1-1.5pct", Regression(error_rate=0.015), "errors 1% -> 1.5%"),
        ("lat-x1.2", Regression(latency_factor=1.2), "latency x1.2 (whole distribution)"),
        ("lat-x1.5", Regression(latency_factor=1.5), "latency x1.5 (whole distribution)"),
        (
            "lat-tail-x1.2",
            Regression(latency_factor=1.2, latency_tail_only=True),
            "latency p99 x1.2, median unchanged",
        ),
        (
            "lat-tail-x1.5",
            Regression(latency_factor=1.5, latency_tail_only=True),
            "latency p99 x1.5, median unchanged",
        ),
        ("cost+30pct", Regression(cost_factor=1.3), "cost per request +30%"),
        (
            LOOP_SCENARIO,
            Regression(llm_calls_per_request=2),
            "2x llm calls per request, same price per call",
        ),
        ("quality-0.05", Regression(quality_delta=-0.05), "quality mean 0.80 -> 0.75"),
        ("completion-5pt", Regression(completion_delta=-0.05), "task completion 90% -> 85%"),
    ]


def build_grid(quick: bool) -> list[Scenario]:
    """The benchmark's scenarios. ``quick`` keeps the grid's shape but cuts replications and
    the long A/A runs, so that it finishes in under two minutes on two cores."""
    return [*_aa_scenarios(quick), *_regression_scenarios(quick), *_drift_scenarios(quick)]


_CONFOUNDED = "base rate +-50% over a 1 h cycle, split drifting 10% -> 30%"


def _aa_scenarios(quick: bool) -> list[Scenario]:
    head = Scenario("aa-1h", Family.AA, 60 if quick else 2000, description="A/A, headline")
    side = replace(head, replications=20 if quick else 300, description="A/A")
    robust = replace(side, replications=20 if quick else 1000)
    return [
        head,
        replace(head, name="aa-8h", replications=4 if quick else 500, horizon_s=8 * HOUR_S),
        replace(side, name="aa-1h-share5", share=0.05),
        replace(side, name="aa-1h-share50", share=0.50),
        replace(side, name="aa-1h-rps10", rps=10.0),
        replace(side, name="aa-1h-rps1000", rps=1000.0),
        replace(
            side,
            name="aa-1h-approvals",
            traffic=Traffic(approvals_per_request=0.05),
            description="A/A, 0.05 approvals asked per request",
        ),
        replace(
            robust,
            name="aa-diurnal-drifted-split",
            diurnal_amplitude=0.5,
            share_end=0.30,
            description=f"A/A, {_CONFOUNDED}",
        ),
        replace(
            robust,
            name="aa-missing-windows",
            missing_window_rate=0.05,
            description="A/A, 5% of each arm's windows never arrive",
        ),
    ]


def _regression_scenarios(quick: bool) -> list[Scenario]:
    reg = 12 if quick else 200
    grid = [
        Scenario(name, Family.REGRESSION, reg, regression=regression, description=text)
        for name, regression, text in _regressions()
    ]
    err2 = grid[0]
    asking = Traffic(approvals_per_request=0.05)
    grid += [
        replace(
            err2,
            name=APPROVALS_SCENARIO,
            traffic=asking,
            regression=Regression(approvals_per_request=0.15),
            description="approvals asked per request 0.05 -> 0.15",
        ),
        replace(err2, name="err-1-2pct-share5", share=0.05),
        replace(err2, name="err-1-2pct-share50", share=0.50),
        replace(err2, name="err-1-2pct-rps10", rps=10.0),
        replace(err2, name="err-1-2pct-rps1000", rps=1000.0),
        replace(err2, name="err-1-2pct-onset10m", onset_s=600.0, horizon_s=600.0 + HOUR_S),
        replace(
            err2,
            name="err-1-2pct-diurnal-drifted-split",
            diurnal_amplitude=0.5,
            share_end=0.30,
            description=f"errors 1% -> 2%, {_CONFOUNDED}",
        ),
    ]
    return grid


def _drift_scenarios(quick: bool) -> list[Scenario]:
    warmup = 1800.0
    return [
        Scenario(
            "drift-err-1-2pct",
            Family.DRIFT,
            12 if quick else 200,
            share=1.0,
            onset_s=warmup,
            horizon_s=warmup + HOUR_S,
            regression=Regression(error_rate=0.02),
            description="errors 1% -> 2% after 30 min of history",
        ),
        Scenario(
            "drift-aa",
            Family.DRIFT_AA,
            4 if quick else 60,
            share=1.0,
            horizon_s=(6 if quick else 24) * HOUR_S,
            description="unchanged version: run length to a false alarm",
        ),
    ]
