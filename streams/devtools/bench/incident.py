"""``coalmine bench incident``: how long after a canary turns bad the real pipeline has rolled
it back and every router serves the stable version again.

The real parts, each in its own process: the broker (started here if the local one is not
running), a worker (ingest, windows and the detector), a controller, ``processes`` router
probe processes of ``routers`` routers each (:mod:`streams.devtools.router_probe`), and this
process, whose simulated agents (``coalmine generate``'s traffic) send through an SDK router
of their own. A fresh topic prefix and a temporary embedded database keep the run apart.

An incident: an agent with a canary at ``canary_share`` (held: its step lasts a day,
auto-rollback on), traffic at ``rate`` requests/s, and ``warmup_s`` into the traffic the
canary's error rate goes from ``error_rate`` to the scenario's (the *onset*). Measured from
the onset: the judge's deciding window, the RollbackCommand on ``coalmine.rollbacks``, and
every router switched (:mod:`streams.devtools.bench.incident_figures`). ``agents`` incidents
run at once, one per agent (a round); a round ends when every canary is rolled back and
every router has switched, or ``timeout_s`` after the onset (a miss). A/A incidents (the
canary no different) are watched for ``aa_observe_s`` each: any rollback is a false one.
Beside each scenario, the pure judge's delay on the same scenario from ``coalmine bench
detector``'s simulator. Whether the pipeline kept up: how long after its end each window
reached ``coalmine.version-stats``.
"""

from __future__ import annotations

import json
import math
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from schemas.command import CommandAction
from schemas.deployment import Phase
from schemas.plan import JudgeOverrides, RolloutPlan, RolloutStep
from streams.detector.events import judged_generations
from streams.detector.judge import JudgeConfig
from streams.devtools.bench import bench_topics, say
from streams.devtools.bench.incident_figures import (
    Figures,
    Incident,
    Scenario,
    budget_s,
    figures,
    fmt_s,
    incident,
    judge_scenario,
    with_judge,
)
from streams.devtools.control_records import example_version
from streams.devtools.generate import GeneratorProgress, TrafficPlan
from streams.devtools.generate import run as generate
from streams.devtools.loop import (
    LoopFollower,
    Rollout,
    SlowWindow,
    command,
    deploy,
    register,
    start_pipeline,
)
from streams.devtools.router_probe import RouterProbe, WatchedRouter
from streams.devtools.traffic import AgentProfile, agent_profiles
from streams.errors import CoalmineError
from streams.settings import Settings

SWITCH_TIMEOUT_S = 15.0
PROGRESS_EVERY_S = 15.0
CATCH_UP_TIMEOUT_S = 60.0
DAY_S = 86_400.0
SLOWEST_WINDOWS = 5
"""Windows named in the JSON among those that reached the topic last."""


@dataclass(frozen=True)
class Options:
    incidents: int = 10
    """Per regression scenario."""
    canary_error_rates: tuple[float, ...] = (0.02, 0.05)
    aa_incidents: int = 10
    agents: int = 5
    """Incidents at once, one per agent."""
    rate: float = 100.0
    """Requests/s per agent."""
    canary_share: float = 0.1
    error_rate: float = 0.01
    warmup_s: float = 30.0
    timeout_s: float = 900.0
    aa_observe_s: float = 300.0
    processes: int = 2
    routers: int = 2
    judge_replications: int = 200
    seed: int = 11

    def plan(self) -> RolloutPlan:
        """One long step at the canary's share. The rollout's alphas are the judge's defaults
        times the generations the detector splits them over, so each generation is judged
        at the defaults, exactly as the pure judge beside it."""
        step = RolloutStep(weight=self.canary_share, min_duration_s=DAY_S)
        plan = RolloutPlan(steps=(step, RolloutStep(weight=1.0)), auto_rollback=True)
        share, judge = judged_generations(plan), JudgeConfig()
        alphas = JudgeOverrides(
            alpha_rollback=judge.alpha_rollback * share, alpha_alert=judge.alpha_alert * share
        )
        return plan.model_copy(update={"judge": alphas})


def run(settings: Settings, options: Options, json_path: Path | None) -> int:
    scenarios = [Scenario(options.error_rate, rate) for rate in options.canary_error_rates]
    work = [(s, options.incidents) for s in scenarios]
    if options.aa_incidents:
        work.append((Scenario(options.error_rate, options.error_rate), options.aa_incidents))
    say(
        f"coalmine bench incident: {options.agents} agents at once, {options.rate:g} req/s "
        f"each, canary {options.canary_share:.0%}, onset {options.warmup_s:g} s into the "
        f"traffic; scenarios: " + "; ".join(f"{s.name} x {n}" for s, n in work)
    )
    results: list[tuple[Scenario, list[Incident]]] = []
    with ExitStack() as cleanup:
        bench = _Bench(settings, options, cleanup)
        for scenario, count in work:
            results.append((scenario, bench.scenario(scenario, count)))
        lags = bench.follower.lag.during(bench.traffic_spans)
        slowest = bench.follower.lag.slowest(bench.traffic_spans, SLOWEST_WINDOWS)
        achieved = bench.achieved_rates
    say(f"\npure judge on the same scenarios ({options.judge_replications} simulated runs)...")
    table = [
        with_judge(
            figures(scenario, found),
            judge_scenario(
                scenario,
                rps=options.rate,
                share=options.canary_share,
                onset_s=options.warmup_s,
                observe_s=options.aa_observe_s if scenario.aa else options.timeout_s,
                replications=options.judge_replications,
            ),
            processes=2,
        )
        for scenario, found in results
    ]
    report = Report(
        options, table, results, lags, slowest, achieved,
        budget_s(settings.window_seconds, settings.allowed_lateness_s),
    )  # fmt: skip
    report.print()
    if json_path is not None:
        report.write_json(json_path)
        say(f"written to {json_path}")
    return 0


class _Bench:
    """The pipeline, the routers and the agents, ready for rounds of incidents."""

    def __init__(self, settings: Settings, options: Options, cleanup: ExitStack) -> None:
        settings = bench_topics(settings, cleanup, "bench-incident")
        tmp = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="bench-incident-")))
        self.settings = replace(settings, clickhouse_url=f"chdb://{tmp / 'chdb'}")
        self.options = options
        self.achieved_rates: list[float] = []
        self.traffic_spans: list[tuple[float, float]] = []
        """When traffic ran (wall clock), per round."""
        self.profiles = agent_profiles(options.agents)
        start_pipeline(self.settings, cleanup, tmp, say)
        register(
            self.settings,
            [
                example_version(p.name, label)
                for p in self.profiles
                for label in (p.stable_version, p.canary_version)
            ],
        )
        for profile in self.profiles:
            deploy(self.settings, profile.name, profile.stable_version, reason="bench: stable")
        self.follower = cleanup.enter_context(LoopFollower(self.settings, windows=True))
        self.follower.wait_caught_up(CATCH_UP_TIMEOUT_S)
        names = [p.name for p in self.profiles]
        self.router = WatchedRouter(self.settings, names, "bench-incident-traffic")
        cleanup.callback(self.router.router.close)
        self.router.router.wait_ready()
        self.probes = [
            cleanup.enter_context(RouterProbe(self.settings, *names, routers=options.routers))
            for _ in range(options.processes)
        ]
        if not all(ready for probe in self.probes for ready in probe.ready):
            raise CoalmineError("a router did not get ready")
        self._rounds = 0

    def scenario(self, scenario: Scenario, count: int) -> list[Incident]:
        found: list[Incident] = []
        while len(found) < count:
            agents = self.profiles[: min(len(self.profiles), count - len(found))]
            self._rounds += 1
            found += self._round(scenario, agents)
        return found

    def _round(self, scenario: Scenario, agents: Sequence[AgentProfile]) -> list[Incident]:
        options = self.options
        rollouts = []
        for profile in agents:
            state = deploy(
                self.settings, profile.name, profile.canary_version, options.plan(), "bench"
            )
            rollouts.append(self.follower.track(state, time.time()))
        for rollout in rollouts:  # every router splits traffic before any is sent
            self._switch_times(rollout.agent, rollout.deployed.generation)
        observe = options.aa_observe_s if scenario.aa else options.timeout_s
        plan = TrafficPlan(
            rate=options.rate * len(agents),
            duration_s=options.warmup_s + observe,
            agents=tuple(agents),
            error_rate=scenario.error_rate,
            canary_error_rate=scenario.canary_error_rate,
            canary_onset_s=options.warmup_s,
            seed=options.seed + self._rounds,
        )
        say(f"\nround {self._rounds}: {scenario.name}, {len(agents)} incidents at once")
        onset = self._traffic(plan, rollouts, scenario.aa)
        self._await_deciding_judgements(rollouts)
        incidents = []
        for rollout in rollouts:
            switched = self._switched(rollout)
            incidents.append(incident(scenario, self._rounds, rollout, onset, switched))
            if rollout.state.phase is not Phase.ROLLED_BACK:
                command(self.settings, rollout.agent, CommandAction.ABORT, reason="bench: end")
        for found in incidents:
            say(
                f"  {found.agent:<16} alert {fmt_s(found.alert_s):>9}  judge's window "
                f"{fmt_s(found.decided_s):>9}  RollbackCommand {fmt_s(found.rollback_s):>9}  "
                f"all routers {fmt_s(found.routers_s):>9}"
            )
        return incidents

    def _traffic(self, plan: TrafficPlan, rollouts: list[Rollout], aa: bool) -> float:
        """Send ``plan``'s traffic until every rollout is rolled back (A/A: until its time is
        up); returns the onset (wall clock)."""
        stop = threading.Event()
        last: list[GeneratorProgress] = []
        thread = threading.Thread(
            target=generate,
            args=(self.settings, plan),
            kwargs={"progress": last.append, "stop": stop, "router": self.router.router},
            name="bench-incident-traffic",
            daemon=True,
        )
        thread.start()
        try:
            next_note = time.monotonic() + PROGRESS_EVERY_S
            while thread.is_alive() and (aa or not _all_rolled_back(self.follower, rollouts)):
                thread.join(0.5)
                if time.monotonic() >= next_note and last:
                    next_note += PROGRESS_EVERY_S
                    since = time.time() - last[-1].started_at.timestamp() - plan.canary_onset_s
                    done = sum(r.state.phase is Phase.ROLLED_BACK for r in rollouts)
                    say(
                        f"  ... {since:6.0f} s since the onset: {done}/{len(rollouts)} rolled "
                        f"back; {last[-1].requests / last[-1].elapsed_s:.0f} req/s sent"
                    )
        finally:
            stop.set()
            thread.join()
        if not last:
            raise CoalmineError("the traffic did not start")
        self.traffic_spans.append((last[-1].started_at.timestamp(), time.time()))
        self.achieved_rates.append(last[-1].requests / last[-1].elapsed_s)
        return last[-1].started_at.timestamp() + plan.canary_onset_s

    def _await_deciding_judgements(self, rollouts: list[Rollout]) -> None:
        """The judgement a rollback came from may be read after the rollback itself (other
        topic, other fetch): wait a little for it."""
        deadline = time.monotonic() + SWITCH_TIMEOUT_S
        while time.monotonic() < deadline and not self.follower.check(
            lambda _watch: all(r.deciding is not None for r in rollouts if r.rollback)
        ):
            time.sleep(0.2)

    def _switched(self, rollout: Rollout) -> list[float | None]:
        ended = rollout.ended(Phase.ROLLED_BACK)
        if ended is None:
            return []
        return self._switch_times(rollout.agent, ended.event.generation)

    def _switch_times(self, agent: str, generation: int) -> list[float | None]:
        """When each router (the probes', the traffic's) first had ``generation``."""
        seen: list[float | None] = [
            t
            for probe in self.probes
            for t in probe.ask(
                op="await", agent=agent, generation=generation, timeout=SWITCH_TIMEOUT_S
            )["seen"]
        ]
        seen.append(self.router.reached(agent, generation, SWITCH_TIMEOUT_S))
        return seen


def _all_rolled_back(follower: LoopFollower, rollouts: list[Rollout]) -> bool:
    return follower.check(
        lambda _watch: all(r.ended(Phase.ROLLED_BACK) is not None for r in rollouts)
    )


@dataclass(frozen=True)
class Report:
    options: Options
    table: list[Figures]
    results: list[tuple[Scenario, list[Incident]]]
    lags: list[float]
    """Seconds after its end each window reached ``coalmine.version-stats``."""
    slowest: list[SlowWindow]
    achieved: list[float]
    """Requests/s the traffic reached, per round."""
    budget: float

    def print(self) -> None:
        table, lags, achieved = self.table, self.lags, self.achieved
        say(
            "\n| scenario | incidents | rolled back | judge's window p50 / p90 | RollbackCommand "
            "p50 / p90 | all routers p50 / p90 | pure judge p50 / p90 (runs) | pipeline's own "
            "cost p50 / p90 / max |"
        )
        say("|---|---|---|---|---|---|---|---|")
        for f in table:
            say(
                f"| {f.scenario} | {f.incidents} | {f.rollbacks} | {fmt_s(f.decided_p50_s)} / "
                f"{fmt_s(f.decided_p90_s)} | {fmt_s(f.rollback_p50_s)} / "
                f"{fmt_s(f.rollback_p90_s)} | {fmt_s(f.routers_p50_s)} / "
                f"{fmt_s(f.routers_p90_s)} | {fmt_s(f.judge_p50_s)} / {fmt_s(f.judge_p90_s)} "
                f"({f.judge_runs}, {f.judge_rollbacks} rolled back) | {fmt_s(f.pipeline_p50_s)} "
                f"/ {fmt_s(f.pipeline_p90_s)} / {fmt_s(f.pipeline_max_s)} |"
            )
        say(
            "\nThe pipeline's own cost: from the end of the window the judge decided on to the "
            "RollbackCommand on the topic; budget one window + allowed lateness + 2 s = "
            f"{self.budget:g} s. Routers: deciding window's end -> last router switched, "
            "p50 / max: "
            + "; ".join(
                f"{f.scenario} {fmt_s(f.to_routers_p50_s)} / {fmt_s(f.to_routers_max_s)}"
                for f in table
                if f.rollbacks
            )
        )
        for f in table:
            if f.rollbacks and f.judge_p50_s is not None and math.isfinite(f.rollback_p50_s):
                say(
                    f"{f.scenario}: RollbackCommand p50 minus the pure judge's p50: "
                    f"{f.rollback_p50_s - f.judge_p50_s:+.1f} s (medians of {f.incidents} and "
                    f"{f.judge_runs} runs: the judge's own spread dominates at this size)"
                )
        if lags and self.slowest:
            last = self.slowest[0]
            say(
                f"Whether the pipeline kept up: windows reached coalmine.version-stats p50 "
                f"{statistics.median(lags):.1f} s, max {max(lags):.1f} s after their end "
                f"({last.agent} {last.version}, the window from {last.window_start}; "
                f"{len(lags)} windows); traffic sent at {min(achieved):.0f}-"
                f"{max(achieved):.0f} req/s ({self.options.rate:g} per agent asked)."
            )

    def write_json(self, path: Path) -> None:
        def finite(value: float) -> float | None:
            return value if math.isfinite(value) else None

        options = self.options
        document = {
            "options": {**asdict(options), "canary_error_rates": list(options.canary_error_rates)},
            "budget_s": self.budget,
            "scenarios": [f.as_json() for f in self.table],
            "incidents": [
                {
                    "scenario": i.scenario,
                    "agent": i.agent,
                    "round": i.round,
                    "onset": i.onset,
                    "alert_s": finite(i.alert_s),
                    "decided_s": finite(i.decided_s),
                    "rollback_s": finite(i.rollback_s),
                    "routers_s": finite(i.routers_s),
                }
                for _, found in self.results
                for i in found
            ],
            "window_lag_s": {
                "p50": statistics.median(self.lags) if self.lags else None,
                "max": max(self.lags, default=None),
                "windows": len(self.lags),
                "slowest": [asdict(window) for window in self.slowest],
            },
            "achieved_rates": self.achieved,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n")
