"""The incident benchmark's bookkeeping, pure: what one incident's times were, the figures
over many, and the pure judge's delay on the same scenario (``coalmine bench detector``'s
harness) to set them beside.

Times of one incident, all from its *onset* (the moment the canary began to fail more often,
wall clock; for an A/A incident, the moment the observation began):

* ``decided_s``: the end of the window on which the judge first said ROLLBACK (the
  statistics' share of the delay, in event time);
* ``rollback_s``: the RollbackCommand read on ``coalmine.rollbacks``;
* ``routers_s``: the last router (every probe router, and the traffic's own) serving the
  stable version again.

``rollback_s - decided_s`` is the pipeline's own cost for that incident: waiting for the
window to be complete (the allowed lateness), emitting it, the detector's read and decision,
and the RollbackCommand written; ``routers_s - decided_s`` adds the controller and the routers.
A miss (no rollback within the incident's time) is an infinite delay and stays in the sample,
so a median or p90 can be ``inf`` (nearest-rank quantiles, as the detector benchmark's).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from streams.detector.bench.runner import run_grid
from streams.detector.bench.scenarios import Family, Regression, Traffic
from streams.detector.bench.scenarios import Scenario as JudgeScenario
from streams.detector.bench.summary import quantile
from streams.devtools.loop import Rollout


@dataclass(frozen=True)
class Scenario:
    """A canary whose error rate goes from ``error_rate`` to ``canary_error_rate`` (the
    same: A/A) at the onset."""

    error_rate: float
    canary_error_rate: float

    @property
    def aa(self) -> bool:
        return self.canary_error_rate == self.error_rate

    @property
    def name(self) -> str:
        if self.aa:
            return f"A/A at {self.error_rate:.0%}"
        return f"errors {self.error_rate:.0%} -> {self.canary_error_rate:.0%}"


@dataclass(frozen=True)
class Incident:
    scenario: str
    agent: str
    round: int
    onset: float
    """Wall clock (``time.time()``)."""
    alert_s: float
    decided_s: float
    rollback_s: float
    routers_s: float

    @property
    def pipeline_s(self) -> float:
        """From the deciding window's end to the RollbackCommand (nan without one)."""
        return self.rollback_s - self.decided_s if math.isfinite(self.rollback_s) else math.nan

    @property
    def to_routers_s(self) -> float:
        """From the deciding window's end to the last router switched (nan without one)."""
        return self.routers_s - self.decided_s if math.isfinite(self.routers_s) else math.nan


def incident(
    scenario: Scenario,
    round_number: int,
    rollout: Rollout,
    onset: float,
    switched: Sequence[float | None],
) -> Incident:
    """One incident's times from what was seen of its rollout and when each router switched
    (None: a router that did not)."""
    alert = rollout.first_alert.at - onset if rollout.first_alert is not None else math.inf
    rollback = rollout.rollback.at - onset if rollout.rollback is not None else math.inf
    decided = math.inf
    if rollout.deciding is not None:
        decided = rollout.deciding.window_end.timestamp() - onset
    routers = math.inf
    if rollout.rollback is not None and switched and None not in switched:
        routers = max(t for t in switched if t is not None) - onset
    return Incident(
        scenario.name, rollout.agent, round_number, onset, alert, decided, rollback, routers
    )


@dataclass(frozen=True)
class Figures:
    """One scenario's incidents, summed up; delays in seconds from the onset."""

    scenario: str
    incidents: int
    rollbacks: int
    alert_p50_s: float
    decided_p50_s: float
    decided_p90_s: float
    rollback_p50_s: float
    rollback_p90_s: float
    routers_p50_s: float
    routers_p90_s: float
    pipeline_p50_s: float
    """Deciding window's end -> RollbackCommand, over the incidents rolled back."""
    pipeline_p90_s: float
    pipeline_max_s: float
    to_routers_p50_s: float
    to_routers_max_s: float
    judge_p50_s: float | None = None
    """The pure judge on the same scenario (``coalmine bench detector``'s harness)."""
    judge_p90_s: float | None = None
    judge_runs: int = 0
    judge_rollbacks: int = 0

    def as_json(self) -> dict[str, object]:
        """JSON-safe: an infinite delay (a miss) or no value becomes null."""
        return {k: _finite_or_none(v) for k, v in asdict(self).items()}


def _finite_or_none(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _p(values: Sequence[float], q: float) -> float:
    return quantile(values, q) if values else math.nan


def figures(scenario: Scenario, incidents: Sequence[Incident]) -> Figures:
    pipeline = [i.pipeline_s for i in incidents if math.isfinite(i.pipeline_s)]
    to_routers = [i.to_routers_s for i in incidents if math.isfinite(i.to_routers_s)]
    return Figures(
        scenario=scenario.name,
        incidents=len(incidents),
        rollbacks=sum(math.isfinite(i.rollback_s) for i in incidents),
        alert_p50_s=_p([i.alert_s for i in incidents], 0.5),
        decided_p50_s=_p([i.decided_s for i in incidents], 0.5),
        decided_p90_s=_p([i.decided_s for i in incidents], 0.9),
        rollback_p50_s=_p([i.rollback_s for i in incidents], 0.5),
        rollback_p90_s=_p([i.rollback_s for i in incidents], 0.9),
        routers_p50_s=_p([i.routers_s for i in incidents], 0.5),
        routers_p90_s=_p([i.routers_s for i in incidents], 0.9),
        pipeline_p50_s=_p(pipeline, 0.5),
        pipeline_p90_s=_p(pipeline, 0.9),
        pipeline_max_s=max(pipeline, default=math.nan),
        to_routers_p50_s=_p(to_routers, 0.5),
        to_routers_max_s=max(to_routers, default=math.nan),
    )


def judge_scenario(
    scenario: Scenario,
    *,
    rps: float,
    share: float,
    onset_s: float,
    observe_s: float,
    replications: int,
) -> JudgeScenario:
    """The same deployment for ``coalmine bench detector``'s simulator: an agent of ``rps``
    requests/s, its canary at ``share``, the change ``onset_s`` after the first window,
    watched for ``observe_s`` after it."""
    return JudgeScenario(
        name=scenario.name,
        family=Family.AA if scenario.aa else Family.REGRESSION,
        replications=replications,
        rps=rps,
        share=share,
        onset_s=onset_s,
        horizon_s=onset_s + observe_s,
        regression=Regression(error_rate=scenario.canary_error_rate),
        traffic=Traffic(error_rate=scenario.error_rate),
    )


def with_judge(found: Figures, judge: JudgeScenario, *, processes: int) -> Figures:
    """``found`` with the pure judge's delay (and its rollbacks) on ``judge`` beside it."""
    (row,) = run_grid([judge], ["coalmine"], processes=processes, progress=lambda _line: None)
    return Figures(
        **{
            **asdict(found),
            "judge_p50_s": row.delay_median_s,
            "judge_p90_s": row.delay_p90_s,
            "judge_runs": row.runs,
            "judge_rollbacks": row.alarms,
        }
    )


def budget_s(window_seconds: float, allowed_lateness_s: float) -> float:
    """What the pipeline may add to the judge's delay: one window, the lateness, 2 s."""
    return window_seconds + allowed_lateness_s + 2.0


def fmt_s(seconds: float | None) -> str:
    """``12.3 s``, ``4.2 min``, ``missed`` (inf) or ``-``."""
    if seconds is None or math.isnan(seconds):
        return "-"
    if math.isinf(seconds):
        return "missed"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
