"""The harness: replications of every scenario, each stream fed to every judge.

One replication = one simulated deployment. Its stream is drawn once
(:func:`streams.detector.bench.simulate.simulate`) and every judge observes the identical
windows, one ``observe`` per 5 s window with ``now`` at the window's end (peeking every
window), until its first ROLLBACK or the horizon. Replications are spread over worker
processes in chunks; results come back as plain :class:`Outcome` values.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from schemas.judgement import Verdict
from schemas.window_stats import WindowStats
from streams.detector.bench.baselines import (
    BaselineDecision,
    FlaggerConfig,
    FlaggerJudge,
    KayentaJudge,
)
from streams.detector.bench.scenarios import WINDOW_SECONDS, Scenario
from streams.detector.bench.simulate import (
    Stream,
    expected_failures_excess,
    replication_rng,
    simulate,
    window_start,
    window_stats,
)
from streams.detector.bench.summary import Outcome, Row, summarize
from streams.detector.drift import DriftDetector
from streams.detector.judge import CanaryJudge

DEFAULT_SEED = 20261124
CHUNK_WINDOWS = 14_400
"""Windows per task handed to a worker (20 replications of one hour)."""
PROGRESS_EVERY_S = 20.0

Windows = list[tuple[WindowStats | None, WindowStats | None]]


class Verdicted(Protocol):
    @property
    def verdict(self) -> Verdict: ...


class Observer(Protocol):
    """What the harness drives: the shape of :meth:`CanaryJudge.observe`."""

    def observe(
        self, baseline: WindowStats | None, canary: WindowStats | None, now: datetime
    ) -> Verdicted: ...


class DriftAdapter:
    """Gives :class:`DriftDetector` the canary-judge shape: it watches the canary arm alone."""

    def __init__(self, detector: DriftDetector) -> None:
        self._detector = detector

    def observe(
        self, baseline: WindowStats | None, canary: WindowStats | None, now: datetime
    ) -> Verdicted:
        if canary is None:
            return BaselineDecision(Verdict.CONTINUE, "no window")
        return self._detector.observe(canary, now)


class PerSpanCost:
    """The judge as it read cost before it judged cost per request: its per-request cost
    sums replaced by the per-span ones (the mean log cost of a priced span)."""

    def __init__(self, judge: Observer) -> None:
        self._judge = judge

    def observe(
        self, baseline: WindowStats | None, canary: WindowStats | None, now: datetime
    ) -> Verdicted:
        return self._judge.observe(per_span_cost(baseline), per_span_cost(canary), now)


def per_span_cost(stats: WindowStats | None) -> WindowStats | None:
    if stats is None:
        return None
    return stats.model_copy(
        update={
            "request_cost_count": stats.cost_count,
            "request_cost_sum": stats.cost_sum,
            "request_log_cost_sum": stats.log_cost_sum,
            "request_log_cost_sumsq": stats.log_cost_sumsq,
        }
    )


PER_SPAN_COST = "coalmine-per-span-cost"
"""Coalmine's judge reading cost per span: run on the loop scenario only, beside the judge,
to show what judging cost per request catches."""
CANARY_JUDGES: Mapping[str, Callable[[], Observer]] = {
    "coalmine": CanaryJudge,
    PER_SPAN_COST: lambda: PerSpanCost(CanaryJudge()),
    "kayenta": KayentaJudge,
    "flagger": FlaggerJudge,
    "flagger-abs": lambda: FlaggerJudge(FlaggerConfig(relative_factor=None)),
}
"""Judges of a canary against its baseline (A/A and regression scenarios)."""
DRIFT_JUDGES: Mapping[str, Callable[[], Observer]] = {
    "coalmine-drift": lambda: DriftAdapter(DriftDetector()),
}
"""Single-version judges (drift scenarios)."""
ALARMS: Mapping[str, frozenset[Verdict]] = {"coalmine-drift": frozenset({Verdict.ALERT})}
"""Verdicts that count as the alarm, per judge: ROLLBACK unless listed (the drift detector
has no baseline to roll back to; its alarm is an ALERT)."""
ROLLBACK_ONLY = frozenset({Verdict.ROLLBACK})


def judges_for(scenario: Scenario, names: Sequence[str]) -> list[str]:
    """The judges among ``names`` that apply to ``scenario``."""
    pool = DRIFT_JUDGES if scenario.single_version else CANARY_JUDGES
    loops = scenario.regression.llm_calls_per_request is not None
    return [name for name in names if name in pool and (loops or name != PER_SPAN_COST)]


def make_judge(name: str) -> Observer:
    return {**CANARY_JUDGES, **DRIFT_JUDGES}[name]()


def stream_windows(stream: Stream) -> Windows:
    """The (baseline, canary) WindowStats pairs of a stream, in window order."""
    out: Windows = []
    for i in range(stream.windows):
        base = None if stream.baseline is None else window_stats(stream.baseline, i, "stable")
        out.append((base, window_stats(stream.canary, i, "canary")))
    return out


def run_judge(
    judge: Observer,
    windows: Windows,
    excess: Sequence[float],
    alarm_on: frozenset[Verdict] = ROLLBACK_ONLY,
) -> Outcome:
    """Feed ``windows`` to ``judge`` until its first alarm (a verdict in ``alarm_on``)."""
    alarm = alert = passed = math.inf
    last = len(windows) - 1
    started = time.process_time()
    for index, (baseline, canary) in enumerate(windows):
        verdict = judge.observe(baseline, canary, window_start(index + 1)).verdict
        end_s = float((index + 1) * WINDOW_SECONDS)
        if verdict in (Verdict.ALERT, Verdict.ROLLBACK) and alert == math.inf:
            alert = end_s
        if verdict is Verdict.PASS and passed == math.inf:
            passed = end_s
        if verdict in alarm_on:
            alarm, last = end_s, index
            break
    cpu = time.process_time() - started
    return Outcome(
        alarm_s=alarm,
        alert_s=alert,
        pass_s=passed,
        excess_failed=float(excess[last]) if windows else 0.0,
        observed_s=float((last + 1) * WINDOW_SECONDS),
        cpu_s=cpu,
        observations=last + 1,
    )


def run_replication(
    scenario: Scenario, replication: int, seed: int, judges: Sequence[str]
) -> dict[str, Outcome]:
    """One replication: one stream (common random numbers), every judge on it."""
    stream = simulate(scenario, replication_rng(seed, replication))
    windows = stream_windows(stream)
    excess = expected_failures_excess(stream).tolist()
    return {
        name: run_judge(make_judge(name), windows, excess, ALARMS.get(name, ROLLBACK_ONLY))
        for name in judges
    }


@dataclass(frozen=True)
class Task:
    """Replications [first, stop) of scenario number ``index`` of the grid."""

    index: int
    scenario: Scenario
    first: int
    stop: int
    seed: int
    judges: tuple[str, ...]


TaskResult = tuple[int, list[dict[str, Outcome]]]


def _run_task(task: Task) -> TaskResult:
    return task.index, [
        run_replication(task.scenario, r, task.seed, task.judges)
        for r in range(task.first, task.stop)
    ]


def plan(grid: Sequence[Scenario], judges: Sequence[str], seed: int) -> list[Task]:
    """Tasks of at most ~``CHUNK_WINDOWS`` windows, longest scenarios first."""
    tasks = []
    for index, scenario in enumerate(grid):
        names = tuple(judges_for(scenario, judges))
        chunk = max(1, CHUNK_WINDOWS // scenario.windows)
        for first in range(0, scenario.replications, chunk):
            stop = min(first + chunk, scenario.replications)
            tasks.append(Task(index, scenario, first, stop, seed, names))
    return sorted(tasks, key=lambda t: -t.scenario.windows * (t.stop - t.first))


def _results(tasks: Sequence[Task], processes: int) -> Iterator[TaskResult]:
    if processes <= 1:
        yield from map(_run_task, tasks)
        return
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        yield from pool.imap_unordered(_run_task, tasks)


def run_grid(
    grid: Sequence[Scenario],
    judges: Sequence[str],
    *,
    seed: int = DEFAULT_SEED,
    processes: int = 2,
    progress: Callable[[str], None] = print,
) -> list[Row]:
    """Run every scenario of ``grid`` with the applicable ``judges``; one row per pair."""
    tasks = plan(grid, judges, seed)
    outcomes: list[dict[str, list[Outcome]]] = [{} for _ in grid]
    remaining = [s.replications for s in grid]
    total = sum(remaining)
    started = last_note = time.monotonic()
    finished = done = 0
    for index, batch in _results(tasks, processes):
        for replication in batch:
            for name, outcome in replication.items():
                outcomes[index].setdefault(name, []).append(outcome)
        remaining[index] -= len(batch)
        done += len(batch)
        if time.monotonic() - last_note > PROGRESS_EVERY_S:
            last_note = time.monotonic()
            progress(f"  ... {done}/{total} replications, elapsed {last_note - started:.0f} s")
        if remaining[index] == 0:
            finished += 1
            progress(
                f"[{finished}/{len(grid)}] {grid[index].name}: "
                f"{grid[index].replications} replications done, "
                f"elapsed {time.monotonic() - started:.0f} s"
            )
    rows = []
    for scenario, by_judge in zip(grid, outcomes, strict=True):
        for name in judges_for(scenario, judges):
            rows.append(summarize(name, scenario, by_judge.get(name, [])))
    return rows
