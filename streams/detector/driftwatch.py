"""Drift in the stream: every version an agent serves, the stable one included, against its own
trailing history (pure: no I/O, no clock).

:class:`DriftWatch` keeps one :class:`~streams.detector.drift.DriftDetector` per (agent,
version) whose partials it is fed (the owner of the agent's partition, as for the canary
judge), merges each window's partials until window end + ``grace_s``, and raises an
:class:`~schemas.alert.Alert` when a metric's e-detector crosses its alarm level: ``cost_spike``
for the log cost per request, ``drift`` for the others (a provider changing a model under
a pinned version, a slower tool, more failures). A metric alarms again only after its
statistic has fallen below the level. Alerts only: there is nothing to roll back to.

A detector arms only once its reference holds ``min_reference_requests`` (weighted) requests,
so only versions with steady traffic are tested. Its state is not replayed after a restart
(the reference spans an hour of windows): the new owner builds it again from live traffic. A
version with no partial for ``idle_s`` is forgotten, and partials of windows older than that
(a backlog) are counted, not tested.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from schemas.alert import Alert, AlertEvidence, AlertKind, Severity
from schemas.judgement import Metric, Verdict
from streams.detector.drift import DriftConfig, DriftDetector
from streams.detector.events import event_id, metric_words, number
from streams.detector.types import Decision, MetricEvidence
from streams.detector.watch import Partial, RowIdentity

DETECTOR = "drift_detector"
IDLE_S = 600.0


@dataclass
class _Version:
    detector: DriftDetector
    last_seen: datetime
    alarmed: set[Metric] = field(default_factory=set)
    seen: dict[RowIdentity, datetime] = field(default_factory=dict)
    """Partials counted, by identity, with the end of their window (forgotten after idle_s)."""


class DriftWatch:
    """One drift detector per (agent, version) fed here; alerts on alarms (module doc)."""

    def __init__(self, config: DriftConfig, idle_s: float = IDLE_S) -> None:
        self.config = config
        self.idle = timedelta(seconds=idle_s)
        self._versions: dict[tuple[str, str], _Version] = {}
        self.stale = 0
        """Partials of windows that ended more than ``idle_s`` before they were read: not
        tested (alerts about an old backlog would come too late to act on)."""

    @property
    def windows(self) -> dict[tuple[str, str], int]:
        """Windows processed per (agent, version) watched."""
        return {key: v.detector.windows for key, v in self._versions.items()}

    def partials(self, partials: Sequence[Partial], now: datetime) -> list[Alert]:
        alerts: list[Alert] = []
        for partial in partials:
            stats = partial.stats
            if now - stats.window_end > self.idle:
                self.stale += 1  # a backlog (a first start reads the topic from its start)
                continue
            key = (stats.agent, stats.version)
            version = self._versions.get(key)
            if version is None:
                version = self._versions[key] = _Version(DriftDetector(self.config), now)
            if partial.identity in version.seen:
                continue
            version.seen[partial.identity] = stats.window_end
            version.last_seen = now
            decision = version.detector.observe(stats, now)
            alerts += self._transitions(key, version, decision, stats.window_start, now)
        return alerts

    def tick(self, now: datetime) -> list[Alert]:
        """Windows complete without new partials; idle versions are forgotten."""
        alerts: list[Alert] = []
        for key, version in list(self._versions.items()):
            if now - version.last_seen > self.idle:
                del self._versions[key]
                continue
            version.seen = {i: end for i, end in version.seen.items() if now - end <= self.idle}
            decision = version.detector.tick(now)
            alerts += self._transitions(key, version, decision, None, now)
        return alerts

    def disown(self) -> None:
        self._versions.clear()

    def _transitions(
        self,
        key: tuple[str, str],
        version: _Version,
        decision: Decision,
        window_start: datetime | None,
        now: datetime,
    ) -> list[Alert]:
        alarms = {e.metric: e for e in decision.metrics if e.verdict is Verdict.ALERT}
        new = [alarms[m] for m in sorted(alarms.keys() - version.alarmed)]
        version.alarmed = set(alarms)
        return [self._alert(key, evidence, decision, window_start or now, now) for evidence in new]

    def _alert(
        self,
        key: tuple[str, str],
        evidence: MetricEvidence,
        decision: Decision,
        window_start: datetime,
        now: datetime,
    ) -> Alert:
        agent, version = key
        cost = evidence.metric is Metric.LOG_COST_MEAN
        message = (
            f"{agent} {version} drifted from its own trailing history: "
            f"{metric_words(evidence, 'its history')}, e-detector {number(evidence.e_value)} "
            f"> threshold {number(evidence.threshold)} after {decision.windows_compared:,} "
            "windows"
        )
        return Alert(
            id=event_id("drift", agent, version, evidence.metric.value, window_start.isoformat()),
            time=now,
            agent=agent,
            version=version,
            metric=evidence.metric,
            kind=AlertKind.COST_SPIKE if cost else AlertKind.DRIFT,
            severity=Severity.WARNING,
            observed=evidence.estimate_canary,
            baseline=evidence.estimate_baseline,
            effect=evidence.effect,
            evidence=AlertEvidence(
                statistic=evidence.e_value,
                threshold=evidence.threshold,
                n_baseline=evidence.n_baseline,
                n_canary=evidence.n_canary,
            ),
            detector=DETECTOR,
            parameters={"arl0_windows": self.config.arl0_windows},
            message=message[:1024],
        )
