"""What the deployment state machine reads and answers (:mod:`streams.controller.machine`).

Operator commands (:class:`~schemas.command.Command`) and rollback requests
(:class:`~schemas.rollback.RollbackCommand`) come from their topics as they are; the other
inputs are made by the controller's loop: a :class:`Tick` when time passes, a
:class:`GateReading` when it has read a gated version's evaluation figures, a
:class:`Judgement` from each judgement the detector publishes (``coalmine.judgements``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from schemas import judgement as judgement_event
from schemas.command import Command
from schemas.deployment import DeploymentState
from schemas.judgement import Verdict
from schemas.rollback import RollbackCommand

Evidence = Mapping[str, str | float | int | bool | None]


@dataclass(frozen=True)
class Tick:
    """Time passes for ``agent``: a step whose minimum duration is over may end."""

    agent: str


@dataclass(frozen=True)
class EvalFigures:
    """A version's offline evaluation spans (``environment = 'eval'``, kind eval or request)
    as ClickHouse counts them."""

    cases: int
    quality: float | None
    """Mean quality score of the cases that have one; None when none has."""
    error_rate: float | None
    """Failed cases per case; None without cases."""


@dataclass(frozen=True)
class GateReading:
    """The evaluation figures of the rollout ``rollout_id`` (a gated deploy) read now."""

    agent: str
    rollout_id: str
    figures: EvalFigures


@dataclass(frozen=True)
class Judgement:
    """The judge's verdict on the canary of rollout ``rollout_id``, computed against the
    deployment at ``generation``."""

    agent: str
    rollout_id: str
    generation: int
    verdict: Verdict
    reason: str = ""
    evidence: Evidence = field(default_factory=dict)

    @classmethod
    def of(cls, event: judgement_event.Judgement) -> Judgement:
        """The machine's view of a published judgement: its verdict, and for the audit trail
        the figures of the first metric that decided it."""
        evidence: dict[str, str | float | int | bool | None] = {
            "judgement_id": event.id,
            "windows_compared": event.windows_compared,
        }
        deciding = next((m for m in event.metrics if m.verdict is event.verdict), None)
        if deciding is not None and event.verdict is not Verdict.PASS:
            evidence.update(
                metric=deciding.metric.value,
                effect=deciding.effect,
                e_value=deciding.e_value,
                threshold=deciding.threshold,
                n_canary=deciding.n_canary,
                n_baseline=deciding.n_baseline,
            )
        return cls(
            agent=event.agent,
            rollout_id=event.rollout_id,
            generation=event.generation,
            verdict=event.verdict,
            reason=event.explanation,
            evidence=evidence,
        )


Input = Command | RollbackCommand | Tick | GateReading | Judgement
"""Everything that can change a deployment."""


@dataclass(frozen=True)
class Applied:
    """The input made a new generation: ``state`` is to be written."""

    state: DeploymentState


@dataclass(frozen=True)
class Rejected:
    """The input is illegal in this state (or stale, or names what does not exist)."""

    reason: str


@dataclass(frozen=True)
class Duplicate:
    """A command whose id was applied before; nothing changes."""

    state: DeploymentState


@dataclass(frozen=True)
class Unchanged:
    """A legal input with nothing to do now: a step not over yet, a gate still short of cases,
    a verdict that moves nothing."""

    reason: str = ""


Result = Applied | Rejected | Duplicate | Unchanged
