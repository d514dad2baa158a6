"""``coalmine demo``: the loop closing on the embedded defaults, in one command.

Local Kafka (started unless already running), a worker on chDB (with the detector) and a
controller, as child processes. Two simulated agents send traffic through an SDK router:
support-bot gets a bad canary (v13 at 20%, auto-rollback), which starts failing five times as
often a few seconds after its deploy; research-agent a good one (v8, as good as v7) with a
short plan whose steps wait for the judge's PASS. As it happens the demo prints the deploys,
the judge's verdicts, the first alert, the RollbackCommand, when every router serves the
stable version again (also three routers in another process), the good canary's steps and
its promotion. It ends, once both rollouts are decided or the traffic's time is up, with
each deployment's timeline and the per-version table, from SQL (through the worker).
Ctrl-C at any point stops what the demo started.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from schemas.alert import Alert
from schemas.command import CommandAction
from schemas.deployment import DeploymentState, Phase
from schemas.judgement import Judgement, Metric
from schemas.plan import JudgeOverrides, RolloutPlan, RolloutStep
from schemas.rollback import RollbackCommand
from streams import sqlcli
from streams.devtools.control_records import example_version
from streams.devtools.generate import GeneratorProgress, TrafficPlan
from streams.devtools.generate import run as generate
from streams.devtools.loop import (
    Happening,
    LoopFollower,
    Rollout,
    command,
    current_state,
    deploy,
    register,
    start_pipeline,
)
from streams.devtools.router_probe import RouterProbe, WatchedRouter
from streams.devtools.traffic import CATALOG, AgentProfile
from streams.settings import Settings
from streams.statuspage.address import page_url, read_token

CATCH_UP_TIMEOUT_S = 60.0
STATUS_EVERY_S = 10.0
SWITCH_TIMEOUT_S = 10.0
PROBE_ROUTERS = 3
SUMMARY_QUERY = """
SELECT agent, version, requests, round(error_rate, 4) AS error_rate,
       round(latency_p50_ms) AS p50_ms, round(latency_p95_ms) AS p95_ms,
       round(latency_p99_ms) AS p99_ms, round(cost_per_request_usd, 5) AS cost_per_request,
       round(quality_mean, 3) AS quality, round(task_completion_rate, 3) AS completion,
       round(tool_error_rate, 3) AS tool_errors
FROM coalmine.version_summary(since = '{since}', until = now() + INTERVAL 1 MINUTE)
ORDER BY agent, version
"""
TIMELINE_QUERY = """
SELECT substring(toString(time), 12) AS time, source, event, version, canary_weight, detail
FROM coalmine.deployment_timeline(agent = '{agent}', rollout_id = '{rollout_id}')
"""

BAD, GOOD = CATALOG[0], CATALOG[1]
"""support-bot v12 -> v13 (bad), research-agent v7 -> v8 (good)."""
BAD_ERROR_RATE = 0.02
BAD_CANARY_ERROR_RATE = 0.10
BAD_ONSET_S = 10.0
"""Seconds after the deploy at which the bad canary starts failing."""
BAD_PLAN = RolloutPlan(
    steps=(RolloutStep(weight=0.2, min_duration_s=600), RolloutStep(weight=1.0)),
    auto_rollback=True,
)
GOOD_PLAN = RolloutPlan(
    steps=(
        RolloutStep(weight=0.5, min_duration_s=10, require_pass=True),
        RolloutStep(weight=1.0),
    ),
    # Loose enough for a PASS within a minute of demo traffic; the defaults would want
    # thousands of requests to show an error rate no more than 25% worse.
    judge=JudgeOverrides(
        tolerances={
            Metric.ERROR_RATE: 3.0,
            Metric.TASK_FAILURE_RATE: 3.0,
            Metric.TOOL_ERROR_RATE: 3.0,
            Metric.APPROVAL_RATE: 3.0,
            Metric.LATENCY_P95_EXCEEDANCE: 2.0,
            Metric.LATENCY_P99_EXCEEDANCE: 3.0,
            Metric.LATENCY_LOG_MEAN: math.log(1.5),
            Metric.LOG_COST_MEAN: math.log(1.5),
            Metric.QUALITY_MEAN: 0.1,
        }
    ),
)


@dataclass(frozen=True)
class Act:
    """One agent's part: its stable and canary versions, the canary's plan, its traffic."""

    profile: AgentProfile
    plan: RolloutPlan
    traffic: TrafficPlan
    story: str

    @property
    def agent(self) -> str:
        return self.profile.name


def acts(duration_s: float, rate: float, seed: int) -> tuple[Act, Act]:
    """The bad canary's act and the good one's; each agent gets half of ``rate``."""
    bad, good = BAD, GOOD
    half = rate / 2
    return (
        Act(
            bad,
            BAD_PLAN,
            TrafficPlan(
                rate=half,
                duration_s=duration_s,
                agents=(bad,),
                error_rate=BAD_ERROR_RATE,
                canary_error_rate=BAD_CANARY_ERROR_RATE,
                canary_onset_s=BAD_ONSET_S,
                seed=seed,
            ),
            f"a bad canary at 20% with auto-rollback: it fails {BAD_CANARY_ERROR_RATE:.0%} of "
            f"requests instead of {BAD_ERROR_RATE:.0%} from {BAD_ONSET_S:.0f} s on",
        ),
        Act(
            good,
            GOOD_PLAN,
            TrafficPlan(
                rate=half,
                duration_s=duration_s,
                agents=(good,),
                error_rate=BAD_ERROR_RATE,
                seed=seed + 1,
            ),
            "a good canary (it behaves like stable): 50% until the judge says PASS, then 100%",
        ),
    )


def run(
    settings: Settings, *, duration_s: float, rate: float, seed: int, stay: bool = False
) -> int:
    """The demo; ``stay``: afterwards keep the pipeline and its status page up until Ctrl-C."""
    say(
        f"Coalmine demo: a bad canary rolled back and a good one promoted, by themselves "
        f"(at most {duration_s:.0f} s of traffic at {rate:.0f} requests/s)"
    )
    with ExitStack() as cleanup:
        try:
            decided = _run(settings, cleanup, acts(duration_s, rate, seed))
        except KeyboardInterrupt:
            say("\ninterrupted: stopping what the demo started...")
            raise
        if stay:
            _stay(settings)
        say("\nstopping...")
    say(
        "done. `coalmine status`, `coalmine sql` and `coalmine alerts` show more; "
        "`coalmine demo --stay` keeps the status page up after the story."
    )
    return 0 if decided else 1


def _stay(settings: Settings) -> None:
    say(f"\nthe status page stays up until Ctrl-C: {page_url(settings, read_token(settings))}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def _run(settings: Settings, cleanup: ExitStack, cast: tuple[Act, Act]) -> bool:
    began = datetime.now(UTC)
    pipeline = start_pipeline(settings, cleanup, settings.home / "demo", say)
    agents = [act.agent for act in cast]
    register(
        settings,
        [
            example_version(act.agent, label)
            for act in cast
            for label in (act.profile.stable_version, act.profile.canary_version)
        ],
    )
    for act in cast:
        _make_stable(settings, act.profile)
    follower = cleanup.enter_context(LoopFollower(settings))
    follower.wait_caught_up(CATCH_UP_TIMEOUT_S)
    router = WatchedRouter(settings, agents, "coalmine-demo")
    cleanup.callback(router.router.close)
    router.router.wait_ready()
    probe = cleanup.enter_context(RouterProbe(settings, *agents, routers=PROBE_ROUTERS))
    say(f"{PROBE_ROUTERS} more SDK routers follow both agents in another process\n")

    traffic = Traffic(settings, cast, router)
    cleanup.callback(traffic.stop)
    show = Narrator(time.time(), probe, router, lambda: traffic.onset(cast[0]))
    rollouts = []
    for act in cast:
        state = deploy(settings, act.agent, act.profile.canary_version, act.plan, "demo")
        rollouts.append(follower.track(state, time.time()))
        show.say(f"{act.agent}: {act.profile.canary_version} deployed, {act.story}")
    traffic.start()
    show.say(f"traffic: {traffic.rate:.0f} requests/s through the SDK router")
    onset_said = False
    next_status = time.monotonic() + STATUS_EVERY_S
    while traffic.running() and not _decided(rollouts):
        for happening in follower.happenings(timeout_s=0.5):
            show.report(happening)
        onset = traffic.onset(cast[0])
        if not onset_said and onset is not None and time.time() >= onset:
            onset_said = True
            show.say(f"{BAD.name}: {BAD.canary_version} starts failing more often", onset)
        if time.monotonic() >= next_status:
            next_status += STATUS_EVERY_S
            show.say(f"  ... {traffic.sent()} requests sent; " + _status(rollouts))
    # The follower updates the rollouts before the loop reads its happenings: the last ones
    # (a promotion, a rollback) may still wait to be told.
    for happening in follower.happenings(timeout_s=0):
        show.report(happening)
    traffic.stop()
    decided = _decided(rollouts)
    if not decided:
        say(f"\nthe traffic's time is up before both rollouts were decided: {_status(rollouts)}")
    _wait_for_windows(pipeline.worker.scalar, began, settings)
    for rollout in rollouts:
        _print_timeline(settings, rollout)
    since = began - timedelta(seconds=settings.window_seconds)
    columns, rows = sqlcli.fetch(settings, SUMMARY_QUERY.format(since=f"{since:%Y-%m-%d %H:%M:%S}"))
    say("\nper agent and version, from the window aggregates (coalmine.version_summary):\n")
    print(sqlcli.render(columns, rows, "table"))
    return decided


def _make_stable(settings: Settings, profile: AgentProfile) -> None:
    """The agent's stable version as the demo starts from it, whatever an earlier run left."""
    agent, stable = profile.name, profile.stable_version
    state = current_state(settings, agent)
    if state is None or state.stable_version is None:
        deploy(settings, agent, stable, reason="demo: first version")
        return
    if state.phase in (Phase.CANARY, Phase.PAUSED, Phase.AWAITING_APPROVAL, Phase.GATED):
        say(f"{agent}: aborting the rollout of {state.canary_version} an earlier run left")
        state = command(settings, agent, CommandAction.ABORT, reason="demo: start afresh")
    if state.stable_version != stable:
        say(f"{agent}: moving stable from {state.stable_version} back to {stable}")
        command(settings, agent, CommandAction.ROLLBACK, version=stable, reason="demo: afresh")


class Traffic:
    """Each act's traffic in a thread of its own, through the demo's router."""

    def __init__(self, settings: Settings, cast: tuple[Act, ...], router: WatchedRouter) -> None:
        self._stop = threading.Event()
        self._progress: dict[str, GeneratorProgress] = {}
        self._threads = [
            threading.Thread(
                target=generate,
                args=(settings, act.traffic),
                kwargs={
                    "progress": self._recorder(act.agent),
                    "stop": self._stop,
                    "router": router.router,
                },
                name=f"demo-traffic-{act.agent}",
                daemon=True,
            )
            for act in cast
        ]
        self.rate = sum(act.traffic.rate for act in cast)

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _recorder(self, agent: str) -> Callable[[GeneratorProgress], None]:
        def record(progress: GeneratorProgress) -> None:
            self._progress[agent] = progress

        return record

    def onset(self, act: Act) -> float | None:
        """When the act's canary began to behave as planned (wall clock), once known."""
        progress = self._progress.get(act.agent)
        if progress is None:
            return None
        return progress.started_at.timestamp() + act.traffic.canary_onset_s

    def sent(self) -> int:
        return sum(p.requests for p in self._progress.values())

    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join()


def _decided(rollouts: list[Rollout]) -> bool:
    ends = (Phase.ROLLED_BACK, Phase.PROMOTED, Phase.PAUSED)
    return all(r.state.phase in ends for r in rollouts)


def _status(rollouts: list[Rollout]) -> str:
    parts = []
    for r in rollouts:
        state = r.state
        judge = "no judgement yet"
        if r.last_verdict is not None:
            judge = f"judge: {r.last_verdict.value} after {r.judgements} judgements"
        weight = f"{r.canary} at {state.canary_weight:.0%}"
        parts.append(f"{r.agent} {state.phase.value} ({weight}, {judge})")
    return "; ".join(parts)


class Narrator:
    """Says what happened, stamped with the seconds since the deploys; for a rollback, also
    when every router (the traffic's, and the probe's in another process) switched."""

    def __init__(
        self,
        began: float,
        probe: RouterProbe,
        router: WatchedRouter,
        onset: Callable[[], float | None],
    ) -> None:
        self.began = began
        self.probe = probe
        self.router = router
        self.onset = onset

    def say(self, line: str, at: float | None = None) -> None:
        say(f"[{(at or time.time()) - self.began:6.1f} s] {line}")

    def report(self, happening: Happening) -> None:
        rollout, seen = happening
        event, agent = seen.event, rollout.agent
        onset = self.onset() if agent == BAD.name else None
        after = "" if onset is None else f" ({seen.at - onset:.1f} s after the onset)"
        if isinstance(event, Judgement):
            self.say(
                f"{agent}: judge says {event.verdict.value.upper()} after "
                f"{event.windows_compared} windows: {event.explanation}",
                seen.at,
            )
        elif isinstance(event, Alert):
            self.say(f"{agent}: ALERT {event.kind.value}: {event.message}{after}", seen.at)
        elif isinstance(event, RollbackCommand):
            self.say(
                f"{agent}: RollbackCommand from the {event.issued_by} on coalmine.rollbacks: "
                f"{event.reason}{after}",
                seen.at,
            )
        else:
            self.say(f"{agent}: {_describe_state(event)}", seen.at)
            if event.phase is Phase.ROLLED_BACK:
                self._switched(rollout, event, onset)

    def _switched(self, rollout: Rollout, state: DeploymentState, onset: float | None) -> None:
        agent, generation = rollout.agent, state.generation
        seen = self.probe.ask(
            op="await", agent=agent, generation=generation, timeout=SWITCH_TIMEOUT_S
        )["seen"]
        seen.append(self.router.reached(agent, generation, SWITCH_TIMEOUT_S))
        if None in seen:
            self.say(f"{agent}: a router did not switch within {SWITCH_TIMEOUT_S:.0f} s")
            return
        last = max(seen)
        since_onset = (
            "" if onset is None else f", {last - onset:.1f} s after the bad behaviour began"
        )
        self.say(
            f"{agent}: all {len(seen)} routers serve {state.stable_version} again: "
            f"{last - rollout.deployed_at:.1f} s after the deploy{since_onset}",
            last,
        )


def _describe_state(state: DeploymentState) -> str:
    change = state.change
    cause = ""
    if change is not None:
        cause = f" ({change.cause}, by {change.issued_by})" if change.issued_by else ""
        cause = cause or f" ({change.cause})"
    head = f"controller, generation {state.generation}: {state.phase.value}{cause}"
    if state.phase is Phase.PROMOTED:
        return f"{head}: {state.stable_version} is the stable version"
    if state.phase is Phase.ROLLED_BACK:
        return f"{head}: {state.canary_version} out of traffic, {state.stable_version} serves all"
    step = ""
    if state.step_index is not None and state.plan is not None:
        step = f", step {state.step_index + 1}/{len(state.plan.steps)}"
    return f"{head}: {state.canary_version} at {state.canary_weight:.0%}{step}"


def _wait_for_windows(scalar: Callable[[str], object], began: datetime, settings: Settings) -> None:
    """Until every request span of this run is in the window aggregates (or a minute)."""
    wait_s = settings.window_seconds + settings.allowed_lateness_s
    say(f"\nwaiting for the last windows to close ({wait_s:g} s after they end)...")
    since = f"toDateTime64('{began:%Y-%m-%d %H:%M:%S}', 3, 'UTC')"
    requests = f"SELECT countIf(kind = 'request') FROM coalmine.spans WHERE ingested_at >= {since}"
    windows = f"SELECT sum(requests) FROM coalmine.version_stats WHERE emitted_at >= {since}"
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    counted, stored = int(str(scalar(windows))), int(str(scalar(requests)))
    while counted < stored and time.monotonic() < deadline:
        time.sleep(0.5)
        counted, stored = int(str(scalar(windows))), int(str(scalar(requests)))
    say(f"{counted} of {stored} requests stored are in the window aggregates")


def _print_timeline(settings: Settings, rollout: Rollout) -> None:
    say(
        f"\n{rollout.agent} {rollout.canary}: the deployment's timeline "
        f"(coalmine.deployment_timeline, rollout {rollout.rollout_id}):\n"
    )
    query = TIMELINE_QUERY.format(agent=rollout.agent, rollout_id=rollout.rollout_id)
    columns, rows = sqlcli.fetch(settings, query)
    print(sqlcli.render(columns, rows, "table"))


def say(message: str) -> None:
    print(message, flush=True)
