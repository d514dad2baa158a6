"""``coalmine generate``: simulated agents producing trace traffic through the SDK.

Each simulated request is drawn as plain data by :mod:`streams.devtools.traffic`, then recorded
through the real :class:`~streams.sdk.tracer.Tracer` with explicit times, so the traffic
exercises exactly the code path agent authors use. :func:`simulate` is the pure core (no
I/O, no sleeping, the same events for the same seed); :func:`run` paces it in real time and
publishes to Kafka.
"""

from __future__ import annotations

import argparse
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from schemas.trace import SpanKind, TraceEvent
from streams.cliargs import DURATION_S, RATE, float_in, int_in
from streams.devtools.traffic import (
    MAX_AGENTS,
    MAX_LLM_CALLS_FACTOR,
    AgentProfile,
    RequestDraw,
    RequestDrawer,
    StepDraw,
    TrafficPlan,
    VersionChooser,
)
from streams.sdk import (
    CountingPublisher,
    KafkaPublisher,
    PublisherStats,
    Router,
    RoutingTable,
    Span,
    Tracer,
)
from streams.settings import Range, Settings
from streams.topics import ensure_topics

__all__ = [
    "GeneratorProgress",
    "TrafficPlan",
    "add_traffic_arguments",
    "record",
    "run",
    "simulate",
]

# --------------------------------------------------------------------------- arguments

_PROBABILITY = float_in(Range(0, 1))


def add_traffic_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``coalmine generate`` options (defaults shown in ``--help``)."""
    parser.add_argument(
        "--rate",
        type=float_in(RATE),
        default=50.0,
        help="requests per second (default %(default)s)",
    )
    bound = parser.add_mutually_exclusive_group()
    bound.add_argument(
        "--duration",
        type=float_in(DURATION_S),
        default=30.0,
        help="seconds of traffic (default %(default)s)",
    )
    bound.add_argument(
        "--requests", type=int_in(Range(1, 10**9)), help="total requests, instead of --duration"
    )
    parser.add_argument(
        "--agents",
        type=int_in(Range(1, MAX_AGENTS)),
        default=3,
        help="simulated agents (default %(default)s)",
    )
    parser.add_argument(
        "--canary-share",
        type=_PROBABILITY,
        default=0.1,
        help="share of requests on the canary, for agents without a deployment on "
        "coalmine.deployments (default %(default)s)",
    )
    parser.add_argument(
        "--error-rate",
        type=_PROBABILITY,
        default=0.02,
        help="failed-request rate (default %(default)s)",
    )
    parser.add_argument(
        "--canary-error-rate",
        type=_PROBABILITY,
        default=None,
        help="failed-request rate of the canary (default: --error-rate)",
    )
    parser.add_argument(
        "--canary-latency-factor",
        type=float_in(Range(0, 100, low_open=True)),
        default=1.0,
        help="canary step latencies = stable ones times this (default %(default)s)",
    )
    parser.add_argument(
        "--canary-quality-delta",
        type=float_in(Range(-1, 1)),
        default=0.0,
        help="added to the canary's mean quality and task completion rate (default %(default)s)",
    )
    parser.add_argument(
        "--canary-llm-calls-factor",
        type=float_in(Range(0, MAX_LLM_CALLS_FACTOR, low_open=True)),
        default=1.0,
        help="a canary request makes this many times the llm calls of a stable one, each at "
        "the same price: an agent looping (default %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=7,
        help="random seed: same seed, same traffic (default %(default)s)",
    )


# --------------------------------------------------------------------------- recording


def record(draw: RequestDraw, tracer: Tracer, start: datetime) -> None:
    """Record ``draw`` through the SDK's explicit-time API, starting at ``start``."""
    req = tracer.request(draw.agent.operation, tenant=draw.tenant, start_time=start)
    req.set_attribute("channel", draw.channel)
    t = start
    for step in draw.steps:
        t += timedelta(seconds=step.gap_s)
        span = _child(req, step, t)
        if step.input_tokens or step.output_tokens or step.cost_usd is not None:
            span.set_usage(
                input_tokens=step.input_tokens,
                output_tokens=step.output_tokens,
                cost_usd=step.cost_usd,
            )
        if step.error_type is not None:
            span.set_error(step.error_type, step.error_message)
        t += timedelta(seconds=step.duration_s)
        span.end(end_time=t)
    if draw.error_type is not None:
        req.set_error(draw.error_type, f"request failed: {draw.error_type}")
    req.set_outcome(task_completed=draw.task_completed, quality_score=draw.quality_score)
    req.end(end_time=t + timedelta(seconds=draw.tail_s))


def _child(req: Span, step: StepDraw, start: datetime) -> Span:
    if step.kind is SpanKind.LLM:
        assert step.model is not None
        return req.llm(
            step.name, provider=step.model.provider, model=step.model.model, start_time=start
        )
    if step.kind is SpanKind.TOOL:
        return req.tool(step.name, tool_name=step.tool_name, start_time=start)
    return req.span(step.kind, step.name, start_time=start)


class _Simulation:
    """Draws requests and records them through one tracer per (agent, version)."""

    def __init__(
        self, plan: TrafficPlan, publisher: CountingPublisher, router: RoutingTable | None = None
    ) -> None:
        self.plan = plan
        choose = None if router is None else _deployed_version(router)
        self.drawer = RequestDrawer(plan, random.Random(plan.seed), choose)
        # Ids come from their own stream so that traffic does not change if id use does.
        ids = random.Random(f"{plan.seed}:ids")
        self.id_factory = lambda: UUID(int=ids.getrandbits(128), version=4)
        self.publisher = publisher
        self.tracers: dict[tuple[str, str], Tracer] = {}
        self.requests: Counter[tuple[str, str]] = Counter()

    def tracer(self, agent: str, version: str) -> Tracer:
        key = (agent, version)
        if key not in self.tracers:
            self.tracers[key] = Tracer(agent, version, self.publisher, id_factory=self.id_factory)
        return self.tracers[key]

    def step(self, start_at: Callable[[RequestDraw], datetime]) -> RequestDraw:
        draw = self.drawer.request()
        record(draw, self.tracer(draw.agent.name, draw.version), start_at(draw))
        self.requests[(draw.agent.name, draw.version)] += 1
        return draw

    @property
    def invalid_spans(self) -> int:
        return sum(t.invalid_spans + t.publish_errors for t in self.tracers.values())


def _deployed_version(router: RoutingTable) -> VersionChooser:
    """Versions as the agent's deployment routes them; None (the plan's canary share) for an
    agent with no deployment."""

    def choose(agent: AgentProfile, user: str) -> tuple[str, bool] | None:
        if router.deployment(agent.name) is None:
            return None
        route = router.route(agent.name, user, agent.stable_version)
        return route.version, route.canary

    return choose


class _Buffer:
    """In-memory publisher for :func:`simulate`."""

    def __init__(self) -> None:
        self.events: list[TraceEvent] = []

    def publish(self, event: TraceEvent) -> None:
        self.events.append(event)

    def flush(self, timeout: float) -> int:
        return 0

    def close(self, timeout: float) -> None:
        pass

    @property
    def stats(self) -> PublisherStats:
        return PublisherStats(published=len(self.events), delivered=len(self.events))

    def drain(self) -> list[TraceEvent]:
        events, self.events = self.events, []
        return events


def simulate(plan: TrafficPlan, start: datetime, n_requests: int) -> Iterator[TraceEvent]:
    """The events of ``n_requests`` requests, the i-th starting at ``start + i / rate``.
    Pure and deterministic: the same plan (seed) gives the same events, ids included."""
    buffer = _Buffer()
    sim = _Simulation(plan, buffer)
    step = timedelta(seconds=1 / plan.rate)
    for i in range(n_requests):
        sim.step(lambda _draw: start + i * step)  # noqa: B023 (called at once)
        yield from buffer.drain()


# --------------------------------------------------------------------------- real time


@dataclass(frozen=True)
class GeneratorProgress:
    elapsed_s: float
    requests: int
    spans: int
    """Spans handed to the publisher (published + dropped)."""
    delivered: int
    failed: int
    dropped: int
    invalid: int
    done: bool = False

    def line(self) -> str:
        rate = self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return (
            f"generate: {self.elapsed_s:6.1f} s  {self.requests} requests ({rate:.1f}/s)  "
            f"{self.spans} spans  {self.delivered} delivered  {self.failed} failed  "
            f"{self.dropped} dropped"
        )


PROGRESS_EVERY_S = 5.0
CLOSE_TIMEOUT_S = 30.0
INTERRUPTED_CLOSE_TIMEOUT_S = 5.0


def run(
    settings: Settings,
    plan: TrafficPlan,
    *,
    progress: Callable[[GeneratorProgress], None] | None = None,
    stop: threading.Event | None = None,
    publisher: CountingPublisher | None = None,
    router: RoutingTable | None = None,
) -> int:
    """Send ``plan``'s traffic in real time through ``publisher`` (default: Kafka from
    ``settings``): requests paced at ``plan.rate``, each ending "now". Stops after the plan's
    duration or request count, or when ``stop`` is set; flushes; reports progress to
    ``progress`` (default: a line on stdout every few seconds) and returns 0, or 1 if any
    event was not delivered.

    Versions follow ``router``: an agent with a deployment gets the deployment's split by
    simulated user; one without, the plan's versions and canary share. With Kafka (no
    ``publisher`` given) a :class:`Router` of the plan's agents follows the cluster's
    deployments."""
    with ExitStack() as cleanup:
        if publisher is None:
            # Created up front with the configured partitions (an auto-created topic would
            # get the broker's default); this also fails in one clear line if Kafka is not there.
            ensure_topics(settings)
            publisher = KafkaPublisher.from_settings(settings)
            if router is None:
                router = cleanup.enter_context(
                    Router(settings, agents=[a.name for a in plan.agents], name="coalmine-generate")
                )
                router.wait_ready()
        return _send(plan, publisher, router, progress, stop)


def _send(
    plan: TrafficPlan,
    publisher: CountingPublisher,
    router: RoutingTable | None,
    progress: Callable[[GeneratorProgress], None] | None,
    stop: threading.Event | None,
) -> int:
    report = progress or (lambda p: print(p.line(), flush=True))
    if progress is None and router is not None:
        _print_routing(plan, router)
    pacer = _Pacer(_Simulation(plan, publisher, router), publisher)
    try:
        pacer.run(stop or threading.Event(), report)
    except BaseException:
        # Ctrl-C: keep what is already queued if the broker takes it soon, but do not make
        # the user wait out a long flush.
        publisher.close(INTERRUPTED_CLOSE_TIMEOUT_S)
        if progress is None:
            _print_summary(pacer.sim.requests, pacer.snapshot(done=True), "interrupted")
        raise
    publisher.close(CLOSE_TIMEOUT_S)
    final = pacer.snapshot(done=True)
    if progress is None:
        _print_summary(pacer.sim.requests, final)
    else:
        progress(final)
    return 0 if final.failed == final.dropped == final.invalid == 0 else 1


class _Pacer:
    """Sends a simulation's requests at its plan's rate, on the wall clock."""

    def __init__(self, sim: _Simulation, publisher: CountingPublisher) -> None:
        self.sim = sim
        self.publisher = publisher
        self.began = time.monotonic()
        self.sent = 0

    def run(self, stop: threading.Event, report: Callable[[GeneratorProgress], None]) -> None:
        plan = self.sim.plan
        total = plan.total_requests
        next_report = self.began + PROGRESS_EVERY_S
        while total is None or self.sent < total:
            # Due times come from the start, so a slow request is caught up, not compounded.
            delay = self.began + self.sent / plan.rate - time.monotonic()
            if (delay > 0 and stop.wait(delay)) or stop.is_set():
                return
            # The request is recorded when it ends, as a real agent's would be: it ends now.
            self.sim.step(lambda draw: datetime.now(UTC) - timedelta(seconds=draw.duration_s))
            self.sent += 1
            if time.monotonic() >= next_report:
                next_report += PROGRESS_EVERY_S
                report(self.snapshot(done=False))

    def snapshot(self, done: bool) -> GeneratorProgress:
        s = self.publisher.stats
        return GeneratorProgress(
            elapsed_s=time.monotonic() - self.began,
            requests=self.sent,
            spans=s.published + s.dropped,
            delivered=s.delivered,
            failed=s.failed,
            dropped=s.dropped,
            invalid=self.sim.invalid_spans,
            done=done,
        )


def _print_routing(plan: TrafficPlan, router: RoutingTable) -> None:
    for agent in plan.agents:
        state = router.deployment(agent.name)
        if state is None:
            versions = f"{agent.stable_version}, {agent.canary_version}"
            how = f"no deployment: {versions} at {plan.canary_share:.0%}"
        else:
            versions = str(state.stable_version)
            if state.canary_version is not None:
                versions += f", {state.canary_version} at {state.canary_weight:.0%}"
            how = f"deployment generation {state.generation} ({state.phase}): {versions}"
        print(f"generate: {agent.name}: {how}")


def _print_summary(
    requests: Counter[tuple[str, str]], final: GeneratorProgress, how: str = "done"
) -> None:
    print(
        f"generate: {how}: {final.requests} requests, {final.spans} spans in "
        f"{final.elapsed_s:.1f} s; {final.delivered} delivered, {final.failed} failed, "
        f"{final.dropped} dropped, {final.invalid} invalid"
    )
    for (agent, version), count in sorted(requests.items()):
        print(f"  {agent:<20} {version:<6} {count:>8} requests")
