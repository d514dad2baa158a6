"""The closed loop driven from outside, as ``coalmine demo`` and ``coalmine bench incident``
run it: the pipeline's processes, deploys through the controller, and what came of each
rollout, read off the topics as it happens.

* :func:`start_pipeline`: the local broker (started if it is not running), the topics, a
  worker (which runs the detector) and a controller, each a child process.
* :func:`register` and :func:`deploy`: versions on ``coalmine.versions``; a deploy command
  through the controller, its applied state returned.
* :class:`RolloutWatch` (pure): fed the judgements, alerts, rollback commands and deployment
  states read, each with the wall-clock time it was read, it keeps per tracked rollout its
  first alert, its rollback command, its PASS verdicts and states, and says what is new.
* :class:`LoopFollower`: reads those topics in a thread (from their beginning: what belongs
  to an earlier run is not about a tracked rollout) into a :class:`RolloutWatch`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel, ValidationError

from schemas.alert import Alert
from schemas.command import CommandAction
from schemas.deployment import DeploymentState, Phase
from schemas.judgement import Judgement, Verdict
from schemas.plan import RolloutPlan
from schemas.rollback import RollbackCommand
from schemas.topics import ALERTS, DEPLOYMENTS, JUDGEMENTS, ROLLBACKS, VERSION_STATS
from schemas.version import AgentVersion
from schemas.window_stats import WindowStats
from streams.controller.client import new_command, send
from streams.controller.records import load_states
from streams.devtools import localkafka
from streams.devtools.control_records import ControlWriter
from streams.devtools.controller_process import ControllerProcess
from streams.devtools.localkafka import process
from streams.devtools.localkafka.config import local_address
from streams.devtools.worker_process import WorkerProcess
from streams.errors import CoalmineError
from streams.sdk.compacted import Record, latest, read_to_end
from streams.sdk.follow import TopicFollower
from streams.sdk.kafka_security import client_config
from streams.settings import Settings
from streams.statuspage.address import page_url, read_token
from streams.topics import ensure_topics

COMMAND_TIMEOUT_S = 30.0

# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class Pipeline:
    worker: WorkerProcess
    controller: ControllerProcess


def start_pipeline(
    settings: Settings, cleanup: ExitStack, logs: Path, say: Callable[[str], None]
) -> Pipeline:
    """Start what is missing of the pipeline; ``cleanup`` stops it (the broker last, and only
    if it was started here). Logs go to ``logs``."""
    local = local_address(settings)
    if local is not None and not process.answers(*local):
        say("starting the local Kafka broker...")
        # Detached like `coalmine dev up`, so a Ctrl-C does not kill the broker before the
        # worker has stopped; it is stopped last.
        localkafka.up(settings)
        cleanup.callback(localkafka.down, settings)
    ensure_topics(settings)
    say(f"starting the worker, which runs the detector (log: {logs / 'worker.log'})...")
    worker = cleanup.enter_context(WorkerProcess(settings, logs / "worker.log"))
    say(f"worker ready; `coalmine sql` answers through {settings.worker_url}")
    say(f"status page: {page_url(settings, read_token(settings))}")
    say(f"starting the controller (log: {logs / 'controller.log'})...")
    controller = cleanup.enter_context(ControllerProcess(settings, logs / "controller.log"))
    return Pipeline(worker, controller)


def register(settings: Settings, versions: Iterable[AgentVersion]) -> None:
    """Put ``versions`` on ``coalmine.versions`` (the same content again is a no-op)."""
    with ControlWriter(settings) as writer:
        for version in versions:
            writer.version(version)


def current_state(settings: Settings, agent: str) -> DeploymentState | None:
    """The agent's deployment state on ``coalmine.deployments`` now (None: never deployed)."""
    config = client_config(settings)
    table = latest(read_to_end(config, settings.topic(DEPLOYMENTS), COMMAND_TIMEOUT_S))
    return load_states(table).get(agent)


def deploy(
    settings: Settings, agent: str, version: str, plan: RolloutPlan | None = None, reason: str = ""
) -> DeploymentState:
    """``coalmine deploy`` through the running controller; the state it applied."""
    return command(settings, agent, CommandAction.DEPLOY, version=version, plan=plan, reason=reason)


def command(
    settings: Settings, agent: str, action: CommandAction, **fields: object
) -> DeploymentState:
    """An operator's command through the running controller; the state it applied."""
    issued = new_command(agent, action, issued_by="coalmine-devtools", **fields)
    outcome = send(settings, issued, COMMAND_TIMEOUT_S)
    if outcome is None or outcome.state is None:
        why = "no answer" if outcome is None else outcome.reason
        raise CoalmineError(f"the controller did not apply {action.value} of {agent}: {why}")
    return outcome.state


# --------------------------------------------------------------------------- bookkeeping

E_co = TypeVar("E_co", covariant=True)


@dataclass(frozen=True)
class Seen(Generic[E_co]):
    """An event and when it was read (``time.time()``)."""

    event: E_co
    at: float


@dataclass
class Rollout:
    """What happened to one deployment of a canary (``rollout_id``) since it was deployed."""

    deployed: DeploymentState
    deployed_at: float
    """When the deploy was applied (wall clock)."""
    judgements: int = 0
    last_verdict: Verdict | None = None
    first_alert: Seen[Alert] | None = None
    rollback: Seen[RollbackCommand] | None = None
    deciding: Judgement | None = None
    """The first judgement that said ROLLBACK."""
    passes: list[Seen[Judgement]] = field(default_factory=list)
    """The first PASS of each generation."""
    states: list[Seen[DeploymentState]] = field(default_factory=list)
    """Every later generation of the deployment, in order."""

    @property
    def agent(self) -> str:
        return self.deployed.agent

    @property
    def rollout_id(self) -> str:
        assert self.deployed.rollout_id is not None  # a deploy's state names its rollout
        return self.deployed.rollout_id

    @property
    def canary(self) -> str:
        assert self.deployed.canary_version is not None
        return self.deployed.canary_version

    @property
    def since(self) -> float:
        """When the controller made the deployed state (wall clock), else when it was read."""
        made = self.deployed.updated_at
        return self.deployed_at if made is None else made.timestamp()

    @property
    def state(self) -> DeploymentState:
        return self.states[-1].event if self.states else self.deployed

    def ended(self, phase: Phase) -> Seen[DeploymentState] | None:
        """The first state of this rollout in ``phase``, if any."""
        return next((s for s in self.states if s.event.phase is phase), None)


Event = Judgement | Alert | RollbackCommand | DeploymentState
Happening = tuple[Rollout, Seen[Event]]
"""A rollout and the event just read about it that a person would want to see."""


class RolloutWatch:
    """Tracked rollouts and what the topics said about them. Not thread-safe by itself
    (:class:`LoopFollower` holds a lock around it).

    An event belongs to a rollout when it names its ``rollout_id`` (judgements, states, and
    alerts that carry one), or, for a rollback command (which names no rollout) and an alert
    without one, when it is about the rollout's agent and canary and was issued after the
    deploy."""

    def __init__(self) -> None:
        self.rollouts: dict[str, Rollout] = {}
        self.unreadable = 0

    def track(self, deployed: DeploymentState, at: float) -> Rollout:
        rollout = Rollout(deployed, at)
        self.rollouts[rollout.rollout_id] = rollout
        return rollout

    def judgement(self, event: Judgement, at: float) -> list[Happening]:
        rollout = self.rollouts.get(event.rollout_id)
        if rollout is None:
            return []
        rollout.judgements += 1
        new = event.verdict is not rollout.last_verdict
        rollout.last_verdict = event.verdict
        if event.verdict is Verdict.ROLLBACK and rollout.deciding is None:
            rollout.deciding = event
        if event.verdict is Verdict.PASS:
            if any(p.event.generation == event.generation for p in rollout.passes):
                return []  # the PASS of this generation is latched: no news
            rollout.passes.append(Seen(event, at))
            return [(rollout, rollout.passes[-1])]
        return [(rollout, Seen(event, at))] if new and event.verdict is not Verdict.CONTINUE else []

    def alert(self, event: Alert, at: float) -> list[Happening]:
        rollout = self._owner(event.agent, event.version, event.time, event.rollout_id)
        if rollout is None or rollout.first_alert is not None:
            return []
        rollout.first_alert = Seen(event, at)
        return [(rollout, rollout.first_alert)]

    def rollback(self, event: RollbackCommand, at: float) -> list[Happening]:
        rollout = self._owner(event.agent, event.from_version, event.time, None)
        if rollout is None or rollout.rollback is not None:
            return []
        rollout.rollback = Seen(event, at)
        return [(rollout, rollout.rollback)]

    def deployment(self, event: DeploymentState, at: float) -> list[Happening]:
        rollout = self.rollouts.get(event.rollout_id or "")
        if rollout is None or event.generation <= rollout.state.generation:
            return []
        rollout.states.append(Seen(event, at))
        return [(rollout, rollout.states[-1])]

    def _owner(
        self, agent: str, version: str, issued: datetime, rollout_id: str | None
    ) -> Rollout | None:
        if rollout_id is not None:
            return self.rollouts.get(rollout_id)
        candidates = [
            r
            for r in self.rollouts.values()
            if r.agent == agent and r.canary == version and issued.timestamp() >= r.since
        ]
        return max(candidates, key=lambda r: r.since, default=None)


@dataclass
class WindowLag:
    """How long after its end each window first reached ``coalmine.version-stats`` (its first
    partial; corrections come later): whether the pipeline keeps up. A window is due
    ``allowed_lateness_s`` after its end."""

    first: dict[tuple[str, str, datetime], tuple[float, float]] = field(default_factory=dict)
    """Per (agent, version, window start): the window's end and its lag, in seconds."""

    def add(self, window: WindowStats, at: float) -> None:
        key = (window.agent, window.version, window.window_start)
        end = window.window_end.timestamp()
        self.first.setdefault(key, (end, at - end))

    @property
    def lags_s(self) -> list[float]:
        return [lag for _, lag in self.first.values()]

    def during(self, spans: list[tuple[float, float]]) -> list[float]:
        """The lags of windows that ended within one of ``spans`` (wall-clock start, end):
        the last window before traffic stops waits for the idle flush, not for lateness."""
        return list(self._during(spans).values())

    def slowest(self, spans: list[tuple[float, float]], count: int) -> list[SlowWindow]:
        """The ``count`` windows of :meth:`during` that reached the topic last after their end."""
        found = sorted(self._during(spans).items(), key=lambda item: -item[1])[:count]
        return [
            SlowWindow(agent, version, start.isoformat(), round(lag, 3))
            for (agent, version, start), lag in found
        ]

    def _during(self, spans: list[tuple[float, float]]) -> dict[tuple[str, str, datetime], float]:
        """Per window that ended within one of ``spans``: its lag."""
        return {
            key: lag
            for key, (end, lag) in self.first.items()
            if any(start <= end <= stop for start, stop in spans)
        }


@dataclass(frozen=True)
class SlowWindow:
    """A window that reached ``coalmine.version-stats`` late: whose, and how late."""

    agent: str
    version: str
    window_start: str
    lag_s: float


# --------------------------------------------------------------------------- reading


class LoopFollower:
    """Reads judgements, alerts, rollback commands and deployment states (and, with
    ``windows``, the window aggregates) in a background thread into :attr:`watch`; what is
    new waits in :meth:`happenings`. A context manager."""

    def __init__(self, settings: Settings, *, windows: bool = False) -> None:
        self.watch = RolloutWatch()
        self.lag = WindowLag()
        self._lock = threading.Lock()
        self._new: list[Happening] = []
        self._changed = threading.Condition(self._lock)
        self._parsers: dict[str, Callable[[bytes, float], list[Happening]]] = {
            settings.topic(JUDGEMENTS): self._parse(Judgement, self.watch.judgement),
            settings.topic(ALERTS): self._parse(Alert, self.watch.alert),
            settings.topic(ROLLBACKS): self._parse(RollbackCommand, self.watch.rollback),
            settings.topic(DEPLOYMENTS): self._parse(DeploymentState, self.watch.deployment),
        }
        self._rank = {topic: rank for rank, topic in enumerate(self._parsers)}
        if windows:
            self._parsers[settings.topic(VERSION_STATS)] = self._windows
        self._follower = TopicFollower(
            settings, list(self._parsers), self._on_records, name="coalmine-loop-follower"
        )
        self._follower.start()

    def __enter__(self) -> LoopFollower:
        return self

    def __exit__(self, *exc: object) -> None:
        self._follower.close()

    def wait_caught_up(self, timeout_s: float) -> None:
        if not self._follower.caught_up.wait(timeout_s):
            raise CoalmineError(f"the loop's topics were not read to their ends in {timeout_s} s")

    def track(self, deployed: DeploymentState, at: float) -> Rollout:
        with self._lock:
            return self.watch.track(deployed, at)

    def happenings(self, timeout_s: float) -> list[Happening]:
        """What is new since the last call, waiting up to ``timeout_s`` for something."""
        with self._changed:
            self._changed.wait_for(lambda: bool(self._new), timeout_s)
            new, self._new = self._new, []
            return new

    def check(self, condition: Callable[[RolloutWatch], bool]) -> bool:
        with self._lock:
            return condition(self.watch)

    def _on_records(self, records: list[Record]) -> None:
        at = time.time()
        # Read together, records go in causal order: a judgement makes an alert, which makes
        # a rollback command, which makes a state (each topic's own order kept).
        causal = sorted(records, key=lambda r: self._rank.get(r.topic, len(self._rank)))
        with self._changed:
            for record in causal:
                if record.value is not None:
                    self._new += self._parsers[record.topic](record.value, at)
            self._changed.notify_all()

    def _parse(
        self, model: type[M], apply: Callable[[M, float], list[Happening]]
    ) -> Callable[[bytes, float], list[Happening]]:
        def parse(value: bytes, at: float) -> list[Happening]:
            try:
                event = model.model_validate_json(value)
            except ValidationError:
                self.watch.unreadable += 1
                return []
            return apply(event, at)

        return parse

    def _windows(self, value: bytes, at: float) -> list[Happening]:
        try:
            self.lag.add(WindowStats.model_validate_json(value), at)
        except ValidationError:
            self.watch.unreadable += 1
        return []


M = TypeVar("M", bound=BaseModel)
