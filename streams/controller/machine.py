"""The deployment state machine: ``apply(state, input, now, versions) -> result``, pure.

One agent's :class:`~schemas.deployment.DeploymentState` and one input give either a new
state (one generation later, its ``change`` saying why), a rejection with its reason, a
duplicate (a command id applied before) or nothing to do. No I/O, no clock: the controller
process (:mod:`streams.controller.process`) feeds it and writes what it returns.

Semantics, after Argo Rollouts' canary steps where they fit:

- ``deploy`` starts a rollout of a registered version: the plan's first step (its canary
  weight), or ``awaiting_approval`` when that step needs a person, or ``gated`` (weight 0)
  when the plan has an evaluation gate. An agent's first deploy has nothing to compare with:
  it becomes stable at once (after its gate, if any). Refused while a rollout is live.
- A step ends when its ``min_duration_s`` has passed (a :class:`Tick`) and, if it
  ``require_pass``, the judge has said PASS during it. The next step then starts, or waits in
  ``awaiting_approval`` (at the previous step's weight) until ``approve``; after the last step
  the canary becomes stable (``promoted``).
- ``promote`` ends the current step now (minimum duration and PASS skipped; a step waiting
  for approval counts as approved), as Argo's promote does; ``promote --full`` skips every
  remaining step and makes the canary stable.
- ``pause`` holds a canary at its weight; ``resume`` restarts the current step's minimum
  duration (time paused does not count).
- ``abort`` takes a live canary out of traffic (weight 0, ``rolled_back``), as Argo's abort
  returns traffic to stable; the version is not marked bad, it can be deployed again.
- ``rollback`` takes a live canary out the same way; with ``--to`` it also makes a version
  that was stable before the stable one. Without a live canary it moves stable back to the
  previous stable version (``--to`` picks an older one). A RollbackCommand names the canary
  it means (``from_version``) and is refused when that is not the live canary.
- A judgement applies only to the rollout it names. PASS counts only for the current
  generation and latches for the step; ROLLBACK with ``auto_rollback`` changes nothing here:
  the detector's RollbackCommand, which carries its alerts, takes the canary out, so the
  audit trail names one cause. With ``auto_rollback`` off, ROLLBACK pauses for a person;
  INCONCLUSIVE pauses; ALERT and CONTINUE change nothing.
- The evaluation gate decides once the version has ``min_cases`` eval cases: it passes when
  quality and error rate are within the plan's bounds, else the deploy is rolled back with
  the figures. Fewer cases: the deploy stays gated.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from schemas.command import Command, CommandAction
from schemas.deployment import (
    RECENT_COMMAND_IDS,
    DeploymentChange,
    DeploymentState,
    GateFigures,
    Phase,
)
from schemas.judgement import Verdict
from schemas.plan import DEFAULT_PLAN, MAX_STEPS, EvalGate, RolloutPlan
from schemas.rollback import RollbackCommand
from streams.controller.inputs import (
    Applied,
    Duplicate,
    EvalFigures,
    Evidence,
    GateReading,
    Input,
    Judgement,
    Rejected,
    Result,
    Tick,
    Unchanged,
)

VersionDigests = Mapping[tuple[str, str], str]
"""(agent, version) → digest of every registered version (``coalmine.versions``)."""

LIVE: Final = frozenset({Phase.GATED, Phase.CANARY, Phase.PAUSED, Phase.AWAITING_APPROVAL})
"""Phases with a rollout in progress: its canary may serve (gated: not yet)."""
MAX_PREVIOUS_STABLES: Final = 20
MAX_STEPS_PER_TICK: Final = MAX_STEPS + 1
"""How many changes one moment can make: every step of a plan, then the promotion."""


def apply(
    state: DeploymentState | None, event: Input, now: datetime, versions: VersionDigests
) -> Result:
    """What ``event`` does to ``state`` (None: nothing deployed for the agent yet) at ``now``."""
    if isinstance(event, Command):
        return _command(state, event, now, versions)
    if isinstance(event, RollbackCommand):
        return _rollback_request(state, event, now, versions)
    if state is None:
        return Unchanged(f"nothing deployed for {event.agent}")
    if isinstance(event, Tick):
        return _tick(state, now)
    if isinstance(event, GateReading):
        return _gate(state, event, now)
    return _judgement(state, event, now)


class _Change:
    """The audit fields of one transition, and how to make the next generation with them."""

    def __init__(
        self,
        cause: str,
        now: datetime,
        *,
        command_id: str | None = None,
        issued_by: str | None = None,
        reason: str = "",
        evidence: Evidence | None = None,
    ) -> None:
        self.cause, self.now, self.command_id = cause, now, command_id
        self.issued_by, self.reason, self.evidence = issued_by, reason, dict(evidence or {})

    def make(self, state: DeploymentState, **fields: Any) -> Applied:
        update: dict[str, Any] = {
            **fields,
            "generation": state.generation + 1,
            "updated_at": self.now,
            "last_reason": self.reason,
            "change": DeploymentChange(
                from_phase=state.phase,
                cause=self.cause,
                command_id=self.command_id,
                issued_by=self.issued_by,
                reason=self.reason,
                evidence=self.evidence,
            ),
        }
        if self.command_id is not None:
            update["last_command_id"] = self.command_id
            recent = (self.command_id, *state.recent_command_ids)
            update["recent_command_ids"] = recent[:RECENT_COMMAND_IDS]
        # model_validate, not model_copy: the new state is checked like any record read back.
        return Applied(DeploymentState.model_validate({**dict(state), **update}))


def _command(
    state: DeploymentState | None, cmd: Command, now: datetime, versions: VersionDigests
) -> Result:
    current = state if state is not None else DeploymentState(agent=cmd.agent)
    if cmd.id in current.recent_command_ids:
        return Duplicate(current)
    if cmd.expected_generation is not None and cmd.expected_generation != current.generation:
        return Rejected(
            f"stale generation: expected {cmd.expected_generation}, "
            f"{cmd.agent} is at generation {current.generation}"
        )
    if state is None and cmd.action is not CommandAction.DEPLOY:
        return Rejected(f"unknown agent {cmd.agent}: nothing was deployed")
    change = _Change(
        cmd.action.value, now, command_id=cmd.id, issued_by=cmd.issued_by, reason=cmd.reason
    )
    match cmd.action:
        case CommandAction.DEPLOY:
            return _deploy(current, cmd, change, versions)
        case CommandAction.PROMOTE:
            return _promote(current, change, full=cmd.full)
        case CommandAction.ROLLBACK:
            return _rollback(current, cmd.version, change, versions)
        case CommandAction.PAUSE:
            if current.phase is not Phase.CANARY:
                return Rejected(_not_in(current, "nothing to pause", "only a serving canary"))
            return change.make(current, phase=Phase.PAUSED)
        case CommandAction.RESUME:
            if current.phase is not Phase.PAUSED:
                return Rejected(_not_in(current, "nothing to resume", "the rollout is not paused"))
            return change.make(current, phase=Phase.CANARY, step_started_at=now)
        case CommandAction.APPROVE:
            if current.phase is not Phase.AWAITING_APPROVAL:
                return Rejected(_not_in(current, "nothing to approve", "no step awaits approval"))
            return _enter_step(current, _step(current), change, approved=True)
        case CommandAction.ABORT:
            if current.phase not in LIVE:
                return Rejected(_not_in(current, "nothing to abort", "no rollout in progress"))
            return _canary_out(current, change)


def _not_in(state: DeploymentState, what: str, why: str) -> str:
    return f"{what} for {state.agent}: {why} (phase {state.phase.value})"


def _step(state: DeploymentState) -> int:
    assert state.step_index is not None, "a canary phase always has a step"
    return state.step_index


def _plan(state: DeploymentState) -> RolloutPlan:
    return state.plan if state.plan is not None else DEFAULT_PLAN


def _deploy(
    state: DeploymentState, cmd: Command, change: _Change, versions: VersionDigests
) -> Result:
    if cmd.version is None:
        return Rejected("deploy needs a version")
    digest = versions.get((cmd.agent, cmd.version))
    if digest is None:
        return Rejected(
            f"unknown version {cmd.version} of {cmd.agent}: register it first "
            "(coalmine versions register)"
        )
    if state.phase in LIVE:
        return Rejected(
            f"a rollout of {cmd.agent} {state.canary_version} is in progress "
            f"(phase {state.phase.value}): promote, abort or roll it back first"
        )
    if cmd.version == state.stable_version:
        return Rejected(f"{cmd.version} is already the stable version of {cmd.agent}")
    plan = cmd.plan if cmd.plan is not None else DEFAULT_PLAN
    started = state.model_copy(
        update={
            "canary_version": cmd.version,
            "canary_digest": digest,
            "rollout_id": cmd.id,
            "plan": plan,
            "gate": None,
        }
    )
    if plan.eval_gate is not None:
        return change.make(
            started,
            phase=Phase.GATED,
            canary_weight=0.0,
            step_index=None,
            step_started_at=change.now,
            step_passed=False,
        )
    return _start_rollout(started, change)


def _start_rollout(state: DeploymentState, change: _Change) -> Applied:
    """The canary's traffic begins; a first version has nothing to share traffic with."""
    if state.stable_version is None:
        return _make_canary_stable(state, change, Phase.IDLE)
    return _enter_step(state, 0, change, approved=False)


def _enter_step(state: DeploymentState, index: int, change: _Change, *, approved: bool) -> Applied:
    steps = _plan(state).steps
    if index >= len(steps):
        return _make_canary_stable(state, change, Phase.PROMOTED)
    if steps[index].approval and not approved:
        held = steps[index - 1].weight if index > 0 else 0.0
        return change.make(
            state,
            phase=Phase.AWAITING_APPROVAL,
            step_index=index,
            canary_weight=held,
            step_started_at=change.now,
            step_passed=False,
        )
    return change.make(
        state,
        phase=Phase.CANARY,
        step_index=index,
        canary_weight=steps[index].weight,
        step_started_at=change.now,
        step_passed=False,
    )


def _make_canary_stable(state: DeploymentState, change: _Change, phase: Phase) -> Applied:
    return change.make(
        state,
        phase=phase,
        stable_version=state.canary_version,
        stable_digest=state.canary_digest,
        canary_version=None,
        canary_digest=None,
        canary_weight=0.0,
        step_index=None,
        step_started_at=None,
        step_passed=False,
        previous_stables=_remember(state.stable_version, state.previous_stables),
    )


def _remember(
    old_stable: str | None, previous: tuple[str, ...], *, drop: str = ""
) -> tuple[str, ...]:
    """``previous`` with ``old_stable`` first and ``drop`` (the new stable) left out."""
    versions = [v for v in ((old_stable,) if old_stable else ()) + previous if v != drop]
    return tuple(dict.fromkeys(versions))[:MAX_PREVIOUS_STABLES]


def _promote(state: DeploymentState, change: _Change, *, full: bool) -> Result:
    if state.phase is Phase.GATED:
        return Rejected(
            f"the evaluation gate of {state.agent} {state.canary_version} has not passed: "
            "wait for it, or abort"
        )
    if state.phase not in LIVE:
        return Rejected(_not_in(state, "nothing to promote", "no rollout in progress"))
    if full:
        return _make_canary_stable(state, change, Phase.PROMOTED)
    if state.phase is Phase.AWAITING_APPROVAL:
        return _enter_step(state, _step(state), change, approved=True)
    return _enter_step(state, _step(state) + 1, change, approved=True)


def _canary_out(
    state: DeploymentState, change: _Change, **fields: Any
) -> Applied:  # a live canary stops serving; it stays in the record for the audit
    return change.make(
        state,
        phase=Phase.ROLLED_BACK,
        canary_weight=0.0,
        step_index=None,
        step_started_at=None,
        step_passed=False,
        **fields,
    )


def _rollback(
    state: DeploymentState, to_version: str | None, change: _Change, versions: VersionDigests
) -> Result:
    live = state.phase in LIVE
    if state.stable_version is None and not live:
        return Rejected(f"nothing deployed for {state.agent} to roll back")
    if to_version is None:
        if live:
            return _canary_out(state, change)
        if not state.previous_stables:
            return Rejected(f"{state.agent} has no earlier stable version to roll back to")
        to_version = state.previous_stables[0]
    if to_version == state.stable_version:
        if live:
            return _canary_out(state, change)
        return Rejected(f"{to_version} is already the stable version of {state.agent}")
    if to_version not in state.previous_stables:
        return Rejected(f"{to_version} was never a stable version of {state.agent}")
    digest = versions.get((state.agent, to_version))
    if digest is None:
        return Rejected(f"unknown version {to_version} of {state.agent}")
    stable = {
        "stable_version": to_version,
        "stable_digest": digest,
        "previous_stables": _remember(
            state.stable_version, state.previous_stables, drop=to_version
        ),
    }
    if live:
        return _canary_out(state, change, **stable)
    return change.make(
        state,
        phase=Phase.ROLLED_BACK,
        canary_version=None,
        canary_digest=None,
        canary_weight=0.0,
        **stable,
    )


def _rollback_request(
    state: DeploymentState | None, request: RollbackCommand, now: datetime, versions: VersionDigests
) -> Result:
    if state is None:
        return Rejected(f"unknown agent {request.agent}: nothing was deployed")
    if request.id in state.recent_command_ids:
        return Duplicate(state)
    if state.phase not in LIVE or state.canary_version != request.from_version:
        return Rejected(
            f"{request.from_version} is not a live canary of {request.agent} "
            f"(phase {state.phase.value}, canary {state.canary_version})"
        )
    evidence = {"alert_ids": ",".join(request.alert_ids)} if request.alert_ids else {}
    change = _Change(
        "rollback",
        now,
        command_id=request.id,
        issued_by=request.issued_by,
        reason=request.reason,
        evidence=evidence,
    )
    return _rollback(state, request.to_version, change, versions)


def _tick(state: DeploymentState, now: datetime) -> Result:
    if state.phase is not Phase.CANARY:
        return Unchanged()
    index = _step(state)
    steps = _plan(state).steps
    assert state.step_started_at is not None, "a serving step has a start"
    elapsed = (now - state.step_started_at).total_seconds()
    if elapsed < steps[index].min_duration_s:
        return Unchanged()
    if steps[index].require_pass and not state.step_passed:
        return Unchanged(f"step {index + 1} waits for the judge's PASS")
    reason = f"step {index + 1} of {len(steps)} done after {elapsed:.0f} s"
    return _enter_step(state, index + 1, _Change("step", now, reason=reason), approved=False)


def gate_figures(gate: EvalGate, figures: EvalFigures) -> GateFigures | None:
    """The gate's decision on ``figures``; None while there are fewer than ``min_cases``."""
    if figures.cases < gate.min_cases:
        return None
    quality_ok = gate.min_quality is None or (
        figures.quality is not None and figures.quality >= gate.min_quality
    )
    errors_ok = gate.max_error_rate is None or (
        figures.error_rate is not None and figures.error_rate <= gate.max_error_rate
    )
    return GateFigures(
        cases=figures.cases,
        quality=figures.quality,
        error_rate=figures.error_rate,
        passed=quality_ok and errors_ok,
    )


def _gate_reason(gate: EvalGate, figures: GateFigures) -> str:
    found = [f"{figures.cases} cases"]
    if gate.min_quality is not None:
        found.append(f"quality {_number(figures.quality)} (min {gate.min_quality:g})")
    if gate.max_error_rate is not None:
        found.append(f"error rate {_number(figures.error_rate)} (max {gate.max_error_rate:g})")
    verdict = "passed" if figures.passed else "failed"
    return f"evaluation gate {verdict}: " + ", ".join(found)


def _number(value: float | None) -> str:
    return "none" if value is None else f"{value:.3g}"


def _gate(state: DeploymentState, reading: GateReading, now: datetime) -> Result:
    gate = _plan(state).eval_gate
    if state.phase is not Phase.GATED or reading.rollout_id != state.rollout_id or gate is None:
        return Unchanged(f"rollout {reading.rollout_id} of {state.agent} is not gated")
    figures = gate_figures(gate, reading.figures)
    if figures is None:
        return Unchanged(f"{reading.figures.cases} of {gate.min_cases} evaluation cases")
    evidence = {
        "cases": figures.cases,
        "quality": figures.quality,
        "error_rate": figures.error_rate,
        "passed": figures.passed,
    }
    change = _Change("gate", now, reason=_gate_reason(gate, figures), evidence=evidence)
    if not figures.passed:
        return _canary_out(state, change, gate=figures)
    return _start_rollout(state.model_copy(update={"gate": figures}), change)


def _judgement(state: DeploymentState, judgement: Judgement, now: datetime) -> Result:
    if state.phase not in LIVE or judgement.rollout_id != state.rollout_id:
        return Unchanged(f"rollout {judgement.rollout_id} of {state.agent} is not in progress")
    evidence = {**judgement.evidence, "verdict": judgement.verdict.value}
    change = _Change("judgement", now, reason=judgement.reason, evidence=evidence)
    match judgement.verdict:
        case Verdict.PASS:
            if judgement.generation != state.generation:
                return Rejected(
                    f"stale generation: a PASS for generation {judgement.generation}, "
                    f"{state.agent} is at {state.generation}"
                )
            if state.phase is not Phase.CANARY or state.step_passed:
                return Unchanged()
            return change.make(state, step_passed=True)
        case Verdict.ROLLBACK if _plan(state).auto_rollback:
            return Unchanged("the detector's RollbackCommand takes the canary out")
        case Verdict.ROLLBACK | Verdict.INCONCLUSIVE if state.phase is Phase.CANARY:
            return change.make(state, phase=Phase.PAUSED)
        case _:
            return Unchanged()
