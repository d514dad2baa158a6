"""The detector in the stream: which canaries are judged, on which windows, and what is said
about them. :class:`CanaryWatch` is pure (no I/O, no clock: ``now`` is an argument); the
worker's adapter (:mod:`streams.runtime.detect`) feeds it deployment states, window partials
and ticks, and publishes what it returns.

**Who is judged.** An agent whose deployment state has a canary taking traffic (phase
``canary``, ``paused`` or ``awaiting_approval`` with ``canary_weight`` > 0) has one
:class:`~streams.detector.judge.CanaryJudge` for its current ``(rollout_id, generation)``,
configured from the plan's ``judge`` overrides. A new generation (a step, a pause, a PASS
latched by the controller) starts a new judge; a state without a serving canary drops it.

**Which windows belong to a generation.** Windows of the stable or canary version whose start
is at or after the generation's ``updated_at``: every request in them was routed under that
generation (the routers follow within a second or so). The window that straddles the change
belongs to neither.

**When a window is complete.** Every worker emits its partial of a window at window end +
``allowed_lateness_s`` by its clock, so the watch compares a window's partials, merged by
addition, at window end + ``allowed_lateness_s`` + ``emission_margin_s`` (:attr:`WatchSettings.
grace_s`), once both arms are in. A window with one arm only waits for the other until
``max_lateness_s`` after its end, then counts as unpaired (no information for a paired
comparison). Correction rows (``late``: spans that reached a worker after it had emitted the
window) and partials that arrive after their window was compared form a further comparison of
that window, ``emission_margin_s`` after the first of them arrived, once both arms are in:
each comparison is a valid stratum of the judge's conditional tests.

**What is said.** A :class:`~schemas.judgement.Judgement` per comparison (and one when time
alone changes the verdict, at the horizon); an :class:`~schemas.alert.Alert` on reaching
ALERT, ROLLBACK or INCONCLUSIVE, once each per generation; on ROLLBACK with
``plan.auto_rollback``, one :class:`~schemas.rollback.RollbackCommand` per generation. Ids are
deterministic (:mod:`streams.detector.events`).

**Restarts.** A judge (re)built waits for :meth:`CanaryWatch.replay` with the generation's
partials the store holds; those, the partials it received meanwhile and those still to come
are deduplicated by identity (version, window, source), so each partial counts once. Replayed
windows are compared in window order, late rows after the others, at the instants the live
watch would have used, so the judge reaches the decisions it reached before, and its
judgements come again with the same ids. Alerts and rollback commands whose ids are already
published (:meth:`CanaryWatch.published`: the adapter reads them back from their topics) are
not sent again. One difference remains possible: a partial that reached the live watch after
its window was compared joined a later comparison, whereas a replay merges it into the first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from schemas.alert import Alert
from schemas.deployment import DeploymentState, Phase
from schemas.judgement import Judgement, Verdict
from schemas.rollback import RollbackCommand
from schemas.window_stats import WindowStats
from streams.detector import events
from streams.detector.events import Judged
from streams.detector.judge import CanaryJudge, JudgeConfig
from streams.detector.types import Decision

JUDGED_PHASES = frozenset({Phase.CANARY, Phase.PAUSED, Phase.AWAITING_APPROVAL})
"""Phases in which a canary with a positive weight takes traffic."""

RowIdentity = tuple[str, datetime, int, str]
"""(version, window start, window seconds, source): one partial, whatever copies arrive."""


@dataclass(frozen=True)
class WatchSettings:
    window_seconds: int
    allowed_lateness_s: float
    emission_margin_s: float = 1.0
    """Added to the workers' allowed lateness: their emission and its way to the watch."""
    max_lateness_s: float = 60.0
    """A window still missing an arm this long after its end is given up (unpaired)."""

    @property
    def grace_s(self) -> float:
        return self.allowed_lateness_s + self.emission_margin_s


@dataclass(frozen=True)
class Partial:
    """One window partial as a worker emitted it; ``late``: a correction row."""

    stats: WindowStats
    late: bool = False

    @property
    def identity(self) -> RowIdentity:
        s = self.stats
        return (s.version, s.window_start, s.window_seconds, s.source)


@dataclass(frozen=True)
class Generation:
    """A deployment generation to judge, and where its windows begin."""

    judged: Judged
    since: datetime

    @classmethod
    def of(cls, state: DeploymentState) -> Generation | None:
        """The generation of ``state`` if its canary takes traffic, else None."""
        if (
            state.phase not in JUDGED_PHASES
            or state.canary_weight <= 0
            or state.canary_version is None
            or state.stable_version is None
            or state.rollout_id is None
            or state.plan is None
            or state.updated_at is None
        ):
            return None
        judged = Judged(
            agent=state.agent,
            rollout_id=state.rollout_id,
            generation=state.generation,
            stable_version=state.stable_version,
            canary_version=state.canary_version,
            plan=state.plan,
        )
        return cls(judged, state.updated_at)

    @property
    def agent(self) -> str:
        return self.judged.agent


@dataclass
class Outputs:
    judgements: list[Judgement] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    rollbacks: list[RollbackCommand] = field(default_factory=list)
    replays: list[Generation] = field(default_factory=list)
    """Generations whose judge was just built: replay their stored partials."""

    def __bool__(self) -> bool:
        return bool(self.judgements or self.alerts or self.rollbacks)


@dataclass
class _Group:
    """The partials of one comparison of one window, per arm, until it is compared."""

    window_start: datetime
    due: datetime
    """When it may be compared (once both arms are in)."""
    late: bool
    arms: list[WindowStats | None] = field(default_factory=lambda: [None, None])


class _Canary:
    """One generation's judge and what has been said about it."""

    def __init__(self, generation: Generation, settings: WatchSettings) -> None:
        self.generation = generation
        self.judged = generation.judged
        self.settings = settings
        self.config: JudgeConfig = events.judge_config(self.judged.plan)
        self.judge = CanaryJudge(self.config)
        self.replayed = False
        self.seen: set[RowIdentity] = set()
        self.groups: dict[tuple[datetime, bool], _Group] = {}
        self.comparisons: dict[datetime, int] = {}
        self.unpaired = 0
        self.compared_at: datetime | None = None
        """The instant the judge was last given for a comparison: the latest due instant, so
        a replay gives the judge the instants the live watch gave it."""
        self.verdict = Verdict.CONTINUE
        self.last_window_end: datetime | None = None
        self.raised: list[str] = []
        """Ids of the regression alerts of this generation, in order."""

    def belongs(self, partial: Partial) -> bool:
        s, j = partial.stats, self.judged
        return (
            s.agent == j.agent
            and s.version in (j.stable_version, j.canary_version)
            and s.window_seconds == self.settings.window_seconds
            and s.window_start >= self.generation.since
        )

    def add(self, partial: Partial, now: datetime | None) -> None:
        """Hold a partial for its comparison (``now``: when it arrived; None in a replay)."""
        if partial.identity in self.seen or not self.belongs(partial):
            return
        self.seen.add(partial.identity)
        stats = partial.stats
        late = partial.late or stats.window_start in self.comparisons
        key = (stats.window_start, late)
        group = self.groups.get(key)
        if group is None:
            due = stats.window_end + timedelta(seconds=self.settings.grace_s)
            if late and now is not None:
                due = max(due, now + timedelta(seconds=self.settings.emission_margin_s))
            group = self.groups[key] = _Group(stats.window_start, due, late)
        arm = 1 if stats.version == self.judged.canary_version else 0
        held = group.arms[arm]
        group.arms[arm] = stats if held is None else held.merge(stats)

    def compare_due(self, now: datetime, issue: _Issuer) -> None:
        """Compare every group that is due and whole; give up those too late to be whole."""
        limit = timedelta(seconds=self.settings.max_lateness_s)
        for key in sorted(self.groups, key=lambda k: (k[0], k[1])):
            group = self.groups[key]
            baseline, canary = group.arms
            if baseline is not None and canary is not None and group.due <= now:
                del self.groups[key]
                self._compare(group, baseline, canary, issue)
            elif group.window_start + timedelta(seconds=self.settings.window_seconds) + limit < now:
                del self.groups[key]
                self.unpaired += 1

    def _compare(
        self, group: _Group, baseline: WindowStats, canary: WindowStats, issue: _Issuer
    ) -> None:
        index = self.comparisons.get(group.window_start, 0)
        self.comparisons[group.window_start] = index + 1
        at = group.due if self.compared_at is None else max(self.compared_at, group.due)
        self.compared_at = at
        decision = self.judge.observe(baseline, canary, at)
        self.last_window_end = baseline.window_end
        issue.judgement(self, decision, self.judged.judgement_id(group.window_start, index))

    def tick(self, now: datetime, issue: _Issuer) -> None:
        """Let time pass for the judge (its horizon); a changed verdict is a judgement."""
        if self.compared_at is None or now <= self.compared_at:
            return
        decision = self.judge.observe(None, None, now)
        if decision.verdict is not self.verdict:
            issue.judgement(
                self,
                decision,
                self.judged.time_judgement_id(decision.windows_compared, decision.verdict),
            )


class _Issuer:
    """Turns decisions into events: judgements always, alerts and the rollback command on
    transitions, nothing whose id is already published."""

    def __init__(self, published: set[str], now: datetime) -> None:
        self.published = published
        self.now = now
        self.out = Outputs()

    def judgement(self, canary: _Canary, decision: Decision, id: str) -> None:
        assert canary.last_window_end is not None
        unpaired = canary.unpaired + decision.windows_unpaired
        decided = replace(decision, windows_unpaired=unpaired)
        self.out.judgements.append(
            events.judgement(
                canary.judged,
                decided,
                canary.config,
                id=id,
                window_end=canary.last_window_end,
                time=self.now,
            )
        )
        self._transition(canary, decided)
        canary.verdict = decision.verdict

    def _transition(self, canary: _Canary, decision: Decision) -> None:
        judged, verdict = canary.judged, decision.verdict
        if verdict in (Verdict.ALERT, Verdict.ROLLBACK):
            alert = events.regression_alert(judged, decision, canary.config, verdict, self.now)
            if alert.id not in canary.raised:
                canary.raised.append(alert.id)
                self._send_alert(alert)
            if verdict is Verdict.ROLLBACK and judged.plan.auto_rollback:
                command = events.rollback_command(judged, alert, tuple(canary.raised))
                if command.id not in self.published:
                    self.published.add(command.id)
                    self.out.rollbacks.append(command)
        elif verdict is Verdict.INCONCLUSIVE:
            self._send_alert(events.inconclusive_alert(judged, decision, canary.config, self.now))

    def _send_alert(self, alert: Alert) -> None:
        if alert.id not in self.published:
            self.published.add(alert.id)
            self.out.alerts.append(alert)


class CanaryWatch:
    """Every judged canary of the agents whose partials this watch is fed (module docstring).

    The adapter calls :meth:`deployment` for each deployment state read, :meth:`partials` for
    each batch read from ``coalmine.version-stats``, :meth:`tick` every second or so,
    :meth:`replay` for each generation one of them returned (with the store's partials of that
    generation), :meth:`published` with the ids of alerts and rollback commands found on
    their topics, and :meth:`disown` when its partitions of ``coalmine.version-stats`` were
    revoked.

    **One judge per agent in the group.** The partials of an agent come from one partition,
    so one worker of the group reads them: a watch judges an agent only once it has been fed
    its partials (every worker follows every deployment, only the owner judges). A worker
    that takes over an agent after a rebalance or a crash builds its judge at its first
    partial and replays the rest from the store.
    """

    def __init__(self, settings: WatchSettings) -> None:
        self.settings = settings
        self._generations: dict[str, Generation] = {}
        self._canaries: dict[str, _Canary] = {}
        self._owned: set[str] = set()
        self._recent: dict[str, dict[RowIdentity, Partial]] = {}
        """Per agent, the partials of the last ``max_lateness_s`` (for a judge built later)."""
        self._published: set[str] = set()

    @property
    def judged(self) -> dict[str, Judged]:
        return {agent: canary.judged for agent, canary in self._canaries.items()}

    def published(self, ids: Iterable[str]) -> None:
        """Ids of alerts and rollback commands already on their topics: never sent again."""
        self._published.update(ids)

    def deployment(self, state: DeploymentState) -> Generation | None:
        """Follow an agent's deployment state; returns the generation whose judge was just
        built (replay its stored partials with :meth:`replay`), or None."""
        generation = Generation.of(state)
        if generation is None:
            self._generations.pop(state.agent, None)
            self._canaries.pop(state.agent, None)
            return None
        self._generations[state.agent] = generation
        return self._build(state.agent)

    def _build(self, agent: str) -> Generation | None:
        generation = self._generations.get(agent)
        current = self._canaries.get(agent)
        if generation is None or agent not in self._owned:
            return None
        if current is not None and current.generation == generation:
            return None
        self._canaries[agent] = _Canary(generation, self.settings)
        return generation

    def disown(self) -> None:
        """This worker no longer reads the partials it judged: drop every judge."""
        self._owned.clear()
        self._canaries.clear()
        self._recent.clear()

    def replay(self, generation: Generation, stored: Sequence[Partial], now: datetime) -> Outputs:
        """Start judging ``generation`` with the partials the store holds for it (and those
        received meanwhile). Ignored if the agent has moved to another generation since."""
        canary = self._canaries.get(generation.agent)
        if canary is None or canary.generation != generation or canary.replayed:
            return Outputs()
        received = self._recent.get(generation.agent, {}).values()
        for partial in sorted([*stored, *received], key=_replay_order):
            canary.add(partial, None)
        canary.replayed = True
        issue = _Issuer(self._published, now)
        canary.compare_due(now, issue)
        return issue.out

    def partials(self, partials: Sequence[Partial], now: datetime) -> Outputs:
        """Partials read from ``coalmine.version-stats``; compares whatever became due. The
        generations whose judge this built are in :attr:`Outputs.replays`."""
        replays = []
        for partial in partials:
            agent = partial.stats.agent
            self._recent.setdefault(agent, {})[partial.identity] = partial
            if agent not in self._owned:
                self._owned.add(agent)
                built = self._build(agent)
                if built is not None:
                    replays.append(built)
            canary = self._canaries.get(agent)
            if canary is not None and canary.replayed:
                canary.add(partial, now)
        out = self.tick(now)
        out.replays = replays
        return out

    def tick(self, now: datetime) -> Outputs:
        """Time passes: windows become complete, horizons pass, old partials are forgotten."""
        issue = _Issuer(self._published, now)
        for canary in self._canaries.values():
            if canary.replayed:
                canary.compare_due(now, issue)
                canary.tick(now, issue)
        self._forget(now)
        return issue.out

    def _forget(self, now: datetime) -> None:
        oldest = now - timedelta(seconds=self.settings.max_lateness_s)
        for agent in list(self._recent):
            kept = {k: p for k, p in self._recent[agent].items() if p.stats.window_end >= oldest}
            if kept:
                self._recent[agent] = kept
            else:
                del self._recent[agent]


def _replay_order(partial: Partial) -> tuple[datetime, bool, str, str]:
    stats = partial.stats
    return (stats.window_start, partial.late, stats.version, stats.source)
