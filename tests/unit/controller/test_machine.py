"""The deployment state machine: every (phase, input) pair from a table, and the audit fields
and weights of the main paths."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schemas.command import Command, CommandAction
from schemas.deployment import DeploymentState, Phase
from schemas.judgement import Verdict
from schemas.plan import EvalGate, RolloutPlan, RolloutStep
from schemas.rollback import RollbackCommand
from streams.controller.inputs import (
    Applied,
    Duplicate,
    EvalFigures,
    GateReading,
    Input,
    Judgement,
    Rejected,
    Tick,
    Unchanged,
)
from streams.controller.machine import apply, gate_figures

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
AGENT = "bot"
VERSIONS = {(AGENT, f"v{i}"): "sha256:" + f"{i:x}" * 64 for i in range(1, 4)}
PLAN = RolloutPlan(
    steps=(
        RolloutStep(weight=0.1, min_duration_s=60),
        RolloutStep(weight=0.5, min_duration_s=60, approval=True),
        RolloutStep(weight=1.0),
    )
)
GATED_PLAN = PLAN.model_copy(update={"eval_gate": EvalGate(min_cases=10, min_quality=0.7)})
_ids = iter(range(1_000_000))


def command(action: CommandAction, version: str | None = None, **fields: object) -> Command:
    return Command.model_validate(
        {
            "id": f"c{next(_ids)}",
            "time": T0,
            "agent": AGENT,
            "action": action,
            "version": version,
            "issued_by": "tester",
            **fields,
        }
    )


def applied(state: DeploymentState | None, event: Input, now: datetime = T0) -> DeploymentState:
    result = apply(state, event, now, VERSIONS)
    assert isinstance(result, Applied), result
    return result.state


def deploy(
    state: DeploymentState | None, version: str, plan: RolloutPlan = PLAN
) -> DeploymentState:
    return applied(state, command(CommandAction.DEPLOY, version, plan=plan))


def _states() -> dict[str, DeploymentState | None]:
    idle = deploy(None, "v1")
    canary = deploy(idle, "v2")
    return {
        "none": None,
        "idle": idle,
        "gated": deploy(idle, "v2", GATED_PLAN),
        "canary": canary,
        "paused": applied(canary, command(CommandAction.PAUSE)),
        "await": applied(canary, Tick(AGENT), T0 + timedelta(seconds=60)),
        "back": applied(canary, command(CommandAction.ABORT)),
        "promo": applied(canary, command(CommandAction.PROMOTE, full=True)),
    }


STATES = _states()


def _input(name: str, state: DeploymentState | None) -> Input:
    rollout = state.rollout_id if state is not None and state.rollout_id else "none"
    generation = state.generation if state is not None else 0
    match name:
        case "deploy" | "deploy_unknown":
            return command(CommandAction.DEPLOY, "v3" if name == "deploy" else "v9")
        case "promote_full":
            return command(CommandAction.PROMOTE, full=True)
        case "rollback_to_v1":
            return command(CommandAction.ROLLBACK, "v1")
        case "rollback_request":
            return RollbackCommand(
                id=f"r{next(_ids)}", time=T0, agent=AGENT, from_version="v2",
                reason="error rate", issued_by="detector",
            )  # fmt: skip
        case "tick":
            return Tick(AGENT)
        case "gate_pass":
            return GateReading(AGENT, rollout, EvalFigures(cases=50, quality=0.9, error_rate=0))
        case "judge_pass" | "judge_rollback":
            verdict = Verdict.PASS if name == "judge_pass" else Verdict.ROLLBACK
            return Judgement(AGENT, rollout, generation, verdict, "judged")
        case _:
            return command(CommandAction(name))


# Expected result of each input (rows) in each state (columns): a phase = applied, with that
# phase (idle, gated, canary, paused, await = awaiting_approval, back = rolled_back, promo =
# promoted); x = rejected with a reason; - = unchanged.
TABLE = """
input            none  idle    gated   canary  paused  await   back    promo
deploy           idle  canary  x       x       x       x       canary  canary
deploy_unknown   x     x       x       x       x       x       x       x
promote          x     x       x       canary  canary  canary  x       x
promote_full     x     x       x       promo   promo   promo   x       x
rollback         x     x       back    back    back    back    x       back
rollback_to_v1   x     x       back    back    back    back    x       back
pause            x     x       x       paused  x       x       x       x
resume           x     x       x       x       canary  x       x       x
approve          x     x       x       x       x       canary  x       x
abort            x     x       back    back    back    back    x       x
rollback_request x     x       back    back    back    back    x       x
tick             -     -       -       await   -       -       -       -
gate_pass        -     -       canary  -       -       -       -       -
judge_pass       -     -       -       canary  -       -       -       -
judge_rollback   -     -       -       -       -       -       -       -
"""
PHASES = {
    "idle": Phase.IDLE,
    "gated": Phase.GATED,
    "canary": Phase.CANARY,
    "paused": Phase.PAUSED,
    "await": Phase.AWAITING_APPROVAL,
    "back": Phase.ROLLED_BACK,
    "promo": Phase.PROMOTED,
}


def _cases() -> list[tuple[str, str, str]]:
    lines = TABLE.strip().splitlines()
    columns = lines[0].split()[1:]
    cases = []
    for line in lines[1:]:
        name, *expected = line.split()
        assert len(expected) == len(columns), line
        cases += [(name, state, want) for state, want in zip(columns, expected, strict=True)]
    return cases


def test_the_table_covers_every_phase_and_every_input() -> None:
    covered_phases = {s.phase for s in STATES.values() if s is not None}
    assert covered_phases == set(Phase)
    names = {name for name, _, _ in _cases()}
    assert {a.value for a in CommandAction} <= names


@pytest.mark.parametrize(("name", "state_name", "want"), _cases())
def test_every_phase_and_input(name: str, state_name: str, want: str) -> None:
    state = STATES[state_name]
    # Far enough in the future that every step's minimum duration has passed.
    result = apply(state, _input(name, state), T0 + timedelta(hours=1), VERSIONS)
    if want == "x":
        assert isinstance(result, Rejected), result
        assert result.reason
    elif want == "-":
        assert isinstance(result, Unchanged), result
    else:
        assert isinstance(result, Applied), result
        new = result.state
        assert new.phase is PHASES[want]
        assert new.generation == (state.generation if state else 0) + 1
        assert new.change is not None
        assert new.change.from_phase is (state.phase if state else Phase.IDLE)
        assert_weight_follows_phase(new)


def assert_weight_follows_phase(state: DeploymentState) -> None:
    if state.phase in (Phase.CANARY, Phase.PAUSED):
        assert state.plan is not None and state.step_index is not None
        assert state.canary_weight == state.plan.steps[state.step_index].weight
    elif state.phase is not Phase.AWAITING_APPROVAL:
        assert state.canary_weight == 0.0


def test_a_plan_walked_by_time_and_approval() -> None:
    state = STATES["canary"]
    assert state is not None
    assert (state.canary_weight, state.step_index, state.canary_digest) == (
        0.1, 0, VERSIONS[(AGENT, "v2")],
    )  # fmt: skip
    assert isinstance(apply(state, Tick(AGENT), T0 + timedelta(seconds=59), VERSIONS), Unchanged)
    state = applied(state, Tick(AGENT), T0 + timedelta(seconds=61))
    assert (state.phase, state.canary_weight, state.step_index) == (
        Phase.AWAITING_APPROVAL, 0.1, 1,
    )  # fmt: skip
    assert state.change is not None and state.change.cause == "step"
    state = applied(state, command(CommandAction.APPROVE), T0 + timedelta(seconds=100))
    assert (state.phase, state.canary_weight) == (Phase.CANARY, 0.5)
    state = applied(state, Tick(AGENT), T0 + timedelta(seconds=160))
    assert (state.phase, state.canary_weight) == (Phase.CANARY, 1.0)
    state = applied(state, Tick(AGENT), T0 + timedelta(seconds=160))
    assert state.phase is Phase.PROMOTED
    assert (state.stable_version, state.canary_version, state.canary_weight) == ("v2", None, 0)
    assert state.previous_stables == ("v1",)


def test_a_rollback_request_takes_the_canary_out_with_its_reason() -> None:
    canary = STATES["canary"]
    assert canary is not None
    request = RollbackCommand(
        id="rb-1", time=T0, agent=AGENT, from_version="v2", reason="errors 3x",
        alert_ids=("a1", "a2"), issued_by="detector",
    )  # fmt: skip
    state = applied(canary, request)
    assert (state.phase, state.canary_weight, state.stable_version) == (
        Phase.ROLLED_BACK, 0.0, "v1",
    )  # fmt: skip
    assert state.change is not None
    assert (state.change.cause, state.change.command_id, state.change.issued_by) == (
        "rollback", "rb-1", "detector",
    )  # fmt: skip
    assert state.change.reason == state.last_reason == "errors 3x"
    assert state.change.evidence == {"alert_ids": "a1,a2"}
    assert isinstance(apply(state, request, T0, VERSIONS), Duplicate)


def test_a_command_id_is_applied_once_and_a_stale_generation_is_refused() -> None:
    idle = STATES["idle"]
    assert idle is not None
    first = command(CommandAction.DEPLOY, "v2", plan=PLAN)
    state = applied(idle, first)
    again = apply(state, first, T0, VERSIONS)
    assert isinstance(again, Duplicate) and again.state == state
    stale = apply(state, command(CommandAction.PAUSE, expected_generation=1), T0, VERSIONS)
    assert isinstance(stale, Rejected) and stale.reason.startswith("stale generation")
    fresh = command(CommandAction.PAUSE, expected_generation=state.generation)
    assert applied(state, fresh).phase is Phase.PAUSED


def test_rollback_to_an_earlier_stable_and_refusals() -> None:
    promoted = STATES["promo"]
    assert promoted is not None
    back = applied(promoted, command(CommandAction.ROLLBACK, "v1"))
    assert (back.stable_version, back.stable_digest) == ("v1", VERSIONS[(AGENT, "v1")])
    assert back.previous_stables == ("v2",)
    never = apply(promoted, command(CommandAction.ROLLBACK, "v3"), T0, VERSIONS)
    assert isinstance(never, Rejected) and "never a stable version" in never.reason


def test_the_first_deploy_is_stable_at_once_unless_gated() -> None:
    first = deploy(None, "v1")
    assert (first.phase, first.stable_version, first.canary_version, first.generation) == (
        Phase.IDLE, "v1", None, 1,
    )  # fmt: skip
    gated = deploy(None, "v1", GATED_PLAN)
    assert (gated.phase, gated.stable_version, gated.canary_weight) == (Phase.GATED, None, 0.0)
    short = GateReading(AGENT, "x", EvalFigures(cases=9, quality=1.0, error_rate=0.0))
    assert isinstance(apply(gated, short, T0, VERSIONS), Unchanged)
    rollout = gated.rollout_id
    assert rollout is not None
    reading = GateReading(AGENT, rollout, EvalFigures(cases=9, quality=1.0, error_rate=0.0))
    assert isinstance(apply(gated, reading, T0, VERSIONS), Unchanged)
    passed = applied(gated, GateReading(AGENT, rollout, EvalFigures(10, 0.8, 0.0)))
    assert (passed.phase, passed.stable_version) == (Phase.IDLE, "v1")
    assert passed.gate is not None and passed.gate.passed and passed.gate.cases == 10


def test_a_failed_gate_rolls_back_with_its_figures() -> None:
    gated = STATES["gated"]
    assert gated is not None and gated.rollout_id is not None
    failed = applied(gated, GateReading(AGENT, gated.rollout_id, EvalFigures(12, 0.5, 0.25)))
    assert (failed.phase, failed.canary_weight) == (Phase.ROLLED_BACK, 0.0)
    assert failed.gate is not None and not failed.gate.passed
    assert failed.change is not None and failed.change.evidence["quality"] == 0.5
    assert "quality 0.5 (min 0.7)" in failed.last_reason


def test_gate_figures_decide_at_min_cases() -> None:
    gate = EvalGate(min_cases=5, max_error_rate=0.1)
    assert gate_figures(gate, EvalFigures(4, None, 0.0)) is None
    decided = gate_figures(gate, EvalFigures(5, None, 0.2))
    assert decided is not None and not decided.passed
    no_scores = gate_figures(EvalGate(min_cases=1, min_quality=0.5), EvalFigures(3, None, 0))
    assert no_scores is not None and not no_scores.passed


def test_a_step_requiring_a_pass_waits_for_one_of_the_current_generation() -> None:
    plan = RolloutPlan(steps=(RolloutStep(weight=0.2, min_duration_s=10, require_pass=True),))
    idle = STATES["idle"]
    state = deploy(idle, "v2", plan)
    assert state.rollout_id is not None
    later = T0 + timedelta(seconds=30)
    assert isinstance(apply(state, Tick(AGENT), later, VERSIONS), Unchanged)
    stale = Judgement(AGENT, state.rollout_id, state.generation - 1, Verdict.PASS)
    assert isinstance(apply(state, stale, later, VERSIONS), Rejected)
    other = Judgement(AGENT, "another-rollout", state.generation, Verdict.ROLLBACK)
    assert isinstance(apply(state, other, later, VERSIONS), Unchanged)
    passed = applied(state, Judgement(AGENT, state.rollout_id, state.generation, Verdict.PASS))
    assert passed.step_passed and passed.phase is Phase.CANARY
    assert applied(passed, Tick(AGENT), later).phase is Phase.PROMOTED


def test_with_auto_rollback_a_rollback_verdict_leaves_the_rollback_to_its_command() -> None:
    state = deploy(STATES["idle"], "v2", PLAN)
    assert state.rollout_id is not None
    verdict = Judgement(AGENT, state.rollout_id, state.generation, Verdict.ROLLBACK, "worse")
    result = apply(state, verdict, T0, VERSIONS)
    assert result == Unchanged("the detector's RollbackCommand takes the canary out")


def test_without_auto_rollback_a_rollback_verdict_pauses() -> None:
    plan = PLAN.model_copy(update={"auto_rollback": False})
    state = deploy(STATES["idle"], "v2", plan)
    assert state.rollout_id is not None
    for verdict in (Verdict.ROLLBACK, Verdict.INCONCLUSIVE):
        paused = applied(state, Judgement(AGENT, state.rollout_id, 0, verdict, "worse"))
        assert (paused.phase, paused.canary_weight, paused.last_reason) == (
            Phase.PAUSED, 0.1, "worse",
        )  # fmt: skip
    for verdict in (Verdict.ALERT, Verdict.CONTINUE):
        judged = Judgement(AGENT, state.rollout_id, 0, verdict)
        assert isinstance(apply(state, judged, T0, VERSIONS), Unchanged)


def test_resume_restarts_the_step_clock() -> None:
    paused = STATES["paused"]
    resumed = applied(paused, command(CommandAction.RESUME), T0 + timedelta(seconds=50))
    assert resumed.step_started_at == T0 + timedelta(seconds=50)
    early = apply(resumed, Tick(AGENT), T0 + timedelta(seconds=100), VERSIONS)
    assert isinstance(early, Unchanged)
