"""Rendering of benchmark rows: the markdown table, the issue's targets, the JSON file."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from streams.detector.bench.runner import PER_SPAN_COST
from streams.detector.bench.scenarios import LOOP_SCENARIO
from streams.detector.bench.summary import Row

DAY_S = 86_400.0


def fmt_duration(seconds: float | None) -> str:
    """``inf``, ``42 s``, ``3.5 min`` or ``2.0 h``."""
    if seconds is None or math.isnan(seconds):
        return "-"
    if math.isinf(seconds):
        return "inf"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * DAY_S:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / DAY_S:.1f} d"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _false_alarms(row: Row) -> str:
    if row.false_alarm_rate is None:
        return "-"
    return (
        f"{_pct(row.false_alarm_rate)} "
        f"[{_pct(row.false_alarm_wilson_low)}, {_pct(row.false_alarm_wilson_high)}]"
    )


_HEADER = (
    "| detector | scenario | share | rps | runs | false alarms [95% CI] | delay p50 | delay p90 "
    "| power 5/15/60 min | excess failed | pass | us/obs |"
)


def markdown_table(rows: Sequence[Row]) -> str:
    """One line per (detector, scenario); delays are from the onset, ``inf`` = missed."""
    lines = [_HEADER, "|" + "---|" * 12]
    for row in rows:
        delay_p50 = fmt_duration(row.delay_median_s)
        if row.arl0_s is not None:
            delay_p50 = f"ARL0 {fmt_duration(row.arl0_s)} (>= {fmt_duration(row.arl0_lower95_s)})"
        powers = (row.power_5min, row.power_15min, row.power_60min)
        power = "/".join(f"{100 * p:.0f}" for p in powers)
        lines.append(
            f"| {row.detector} | {row.scenario} | {row.share:g} | {row.rps:g} | {row.runs} "
            f"| {_false_alarms(row)} | {delay_p50} | {fmt_duration(row.delay_p90_s)} "
            f"| {power}% | {row.excess_failed_mean:.1f} | {_pct(row.pass_rate)} "
            f"| {row.us_per_observe:.0f} |"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Target:
    """One of the issue's targets for Coalmine's judges."""

    detector: str
    scenario: str
    what: str
    limit: float

    def value(self, row: Row) -> float | None:
        if self.what == "false_alarm_rate":
            return row.false_alarm_rate
        if self.what == "arl0_lower95_s":
            return row.arl0_lower95_s
        return float(getattr(row, self.what))

    def met(self, value: float) -> bool:
        return value >= self.limit if self.what.startswith("arl0") else value <= self.limit


TARGETS = (
    Target("coalmine", "aa-1h", "false_alarm_rate", 0.01),
    Target("coalmine", "aa-8h", "false_alarm_rate", 0.01),
    Target("coalmine", "err-1-2pct", "delay_median_s", 180.0),
    Target("coalmine", "err-1-2pct", "delay_p90_s", 360.0),
    Target("coalmine", "err-1-1.5pct", "delay_median_s", 600.0),
    Target("coalmine", "lat-x1.5", "delay_median_s", 30.0),
    Target("coalmine", "lat-x1.2", "delay_median_s", 150.0),
    Target("coalmine", "lat-tail-x1.5", "delay_median_s", 30.0),
    Target("coalmine", "lat-tail-x1.2", "delay_median_s", 150.0),
    Target("coalmine", "quality-0.05", "delay_median_s", 20.0),
    Target("coalmine", "cost+30pct", "delay_median_s", 45.0),
    Target("coalmine-drift", "drift-err-1-2pct", "delay_median_s", 60.0),
    Target("coalmine-drift", "drift-aa", "arl0_lower95_s", DAY_S),
)


def _fmt_target(what: str, value: float | None) -> str:
    if value is None:
        return "-"
    if what == "false_alarm_rate":
        return _pct(value)
    return fmt_duration(value)


def targets_table(rows: Sequence[Row]) -> str:
    """The issue's targets against the measured rows (targets without a row are skipped)."""
    index = {(row.detector, row.scenario): row for row in rows}
    lines = ["| target | measured | limit | met |", "|---|---|---|---|"]
    for target in TARGETS:
        row = index.get((target.detector, target.scenario))
        if row is None:
            continue
        value = target.value(row)
        met = value is not None and target.met(value)
        sign = ">=" if target.what.startswith("arl0") else "<="
        lines.append(
            f"| {target.detector} {target.scenario} {target.what} ({row.runs} runs) "
            f"| {_fmt_target(target.what, value)} "
            f"| {sign} {_fmt_target(target.what, target.limit)} | {'yes' if met else 'NO'} |"
        )
    return "\n".join(lines)


def loop_comparison(rows: Sequence[Row]) -> str | None:
    """What judging cost per request catches, from the loop scenario's rows: the judge
    against itself reading cost per span, on the same streams (None without those rows)."""
    index = {(row.detector, row.scenario): row for row in rows}
    per_request = index.get(("coalmine", LOOP_SCENARIO))
    per_span = index.get((PER_SPAN_COST, LOOP_SCENARIO))
    if per_request is None or per_span is None:
        return None
    passed = round(per_span.pass_rate * per_span.runs)
    return (
        f"{LOOP_SCENARIO} (2x llm calls per request, same price per call): cost judged per "
        f"request rolled back {per_request.alarms}/{per_request.runs} canaries, median delay "
        f"{fmt_duration(per_request.delay_median_s)} (p90 "
        f"{fmt_duration(per_request.delay_p90_s)}); the same judge reading cost per span "
        f"rolled back {per_span.alarms}/{per_span.runs} and passed {passed}/{per_span.runs}."
    )


def write_json(rows: Sequence[Row], path: Path) -> None:
    """A JSON list of rows (strict JSON: infinities are written as the string "inf")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps([row.as_json() for row in rows], indent=2, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")
