"""Pure summaries of benchmark runs: false-alarm rates, delays, power, run lengths.

A replication's :class:`Outcome` records when a judge first rolled back (``inf`` if it
never did within the horizon). Delays are measured from the onset; a miss is an infinite
delay and stays in the sample, so a median or p90 can be ``inf``; an alarm before the onset
(a false alarm in a regression scenario) counts as a delay of zero and shows up in
``false_alarm_rate``. Quantiles are nearest-rank (the smallest value with at least q·n of the
sample at or below it), which is well defined with infinite values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from scipy.stats import chi2

from streams.detector.bench.scenarios import Family, Scenario
from streams.detector.stats import wilson_interval

POWER_AT_S = (300.0, 900.0, 3600.0)
"""Power is reported at 5, 15 and 60 minutes after the onset."""


@dataclass(frozen=True)
class Outcome:
    """One judge on one replication."""

    alarm_s: float
    """Seconds from the start to the first ROLLBACK (end of that window); inf if none."""
    alert_s: float
    """Seconds to the first ALERT or ROLLBACK; inf if none."""
    pass_s: float
    """Seconds to the first PASS; inf if none."""
    excess_failed: float
    """Canary failures above the baseline's true rate, up to the alarm or the horizon."""
    observed_s: float
    """Seconds of the stream the judge saw (to its alarm, else the horizon)."""
    cpu_s: float
    """CPU seconds spent in the judge's ``observe`` calls."""
    observations: int


@dataclass(frozen=True)
class Row:
    """One (judge, scenario) line of the report; the JSON rows are :meth:`as_json`."""

    detector: str
    scenario: str
    family: str
    share: float
    rps: float
    onset_s: float
    horizon_s: float
    runs: int
    alarms: int
    false_alarm_rate: float | None
    false_alarm_wilson_low: float | None
    false_alarm_wilson_high: float | None
    delay_median_s: float
    delay_p90_s: float
    alert_delay_median_s: float
    power_5min: float
    power_15min: float
    power_60min: float
    excess_failed_mean: float
    pass_rate: float
    arl0_s: float | None
    arl0_lower95_s: float | None
    us_per_observe: float

    def as_json(self) -> dict[str, object]:
        """A JSON-safe dict: infinite values become the string ``"inf"``, NaN becomes null."""
        return {k: _json_value(v) for k, v in asdict(self).items()}


def _json_value(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank q-quantile; ``inf`` entries are kept (a miss is an infinite delay)."""
    if not values:
        return math.nan
    if not 0.0 < q <= 1.0:
        raise ValueError(f"q must be in (0, 1], got {q!r}")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered) - 1e-9) - 1)]


def share_at_most(values: Sequence[float], limit: float) -> float:
    """Share of ``values`` ≤ ``limit`` (0 for an empty sample)."""
    return sum(1 for v in values if v <= limit) / len(values) if values else 0.0


def delays(outcomes: Sequence[Outcome], onset_s: float) -> list[float]:
    """Detection delay of each replication from the onset (0 for a pre-onset alarm)."""
    return [max(0.0, o.alarm_s - onset_s) for o in outcomes]


def run_length_bounds(outcomes: Sequence[Outcome], confidence: float = 0.95) -> tuple[float, float]:
    """Average run length to a false alarm, from runs that stop at their first alarm.

    With k alarms over a total exposure of T observed seconds, under a constant hazard the
    estimate is T / k (inf when k = 0) and the one-sided lower confidence bound is
    2T / χ²_confidence(2k + 2); for k = 0 that is T / 3 at 95 % (the rule of three)."""
    exposure = sum(o.observed_s for o in outcomes)
    k = sum(1 for o in outcomes if math.isfinite(o.alarm_s))
    estimate = exposure / k if k else math.inf
    lower = 2.0 * exposure / float(chi2.ppf(confidence, 2 * k + 2))
    return estimate, lower


def _false_alarms(scenario: Scenario, outcomes: Sequence[Outcome]) -> int | None:
    if scenario.family in (Family.AA, Family.DRIFT_AA):
        return sum(1 for o in outcomes if math.isfinite(o.alarm_s))
    if scenario.onset_s > 0:
        return sum(1 for o in outcomes if o.alarm_s <= scenario.onset_s)
    return None


def summarize(detector: str, scenario: Scenario, outcomes: Sequence[Outcome]) -> Row:
    """The report row of one judge over all replications of one scenario."""
    runs = len(outcomes)
    delay = delays(outcomes, scenario.onset_s)
    alert = [max(0.0, o.alert_s - scenario.onset_s) for o in outcomes]
    false = _false_alarms(scenario, outcomes)
    low, high = wilson_interval(false, runs) if false is not None else (None, None)
    arl, arl_low = (None, None)
    if scenario.family is Family.DRIFT_AA:
        arl, arl_low = run_length_bounds(outcomes)
    observations = sum(o.observations for o in outcomes)
    cpu = sum(o.cpu_s for o in outcomes)
    return Row(
        detector=detector,
        scenario=scenario.name,
        family=scenario.family.value,
        share=scenario.share,
        rps=scenario.rps,
        onset_s=scenario.onset_s,
        horizon_s=scenario.horizon_s,
        runs=runs,
        alarms=sum(1 for o in outcomes if math.isfinite(o.alarm_s)),
        false_alarm_rate=None if false is None else false / runs,
        false_alarm_wilson_low=low,
        false_alarm_wilson_high=high,
        delay_median_s=quantile(delay, 0.5),
        delay_p90_s=quantile(delay, 0.9),
        alert_delay_median_s=quantile(alert, 0.5),
        power_5min=share_at_most(delay, POWER_AT_S[0]),
        power_15min=share_at_most(delay, POWER_AT_S[1]),
        power_60min=share_at_most(delay, POWER_AT_S[2]),
        excess_failed_mean=sum(o.excess_failed for o in outcomes) / runs if runs else 0.0,
        pass_rate=sum(1 for o in outcomes if math.isfinite(o.pass_s)) / runs if runs else 0.0,
        arl0_s=arl,
        arl0_lower95_s=arl_low,
        us_per_observe=1e6 * cpu / observations if observations else 0.0,
    )
