"""Invariants of the deployment state machine over random streams of inputs (Hypothesis):
weights in [0, 1], generations +1 per change, a rolled-back canary gets no traffic, no
command id applied twice, and never an exception."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

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
    Tick,
)
from streams.controller.machine import LIVE, apply
from tests.unit.controller.test_machine import AGENT, T0, VERSIONS

VERSION_NAMES = ("v1", "v2", "v3", "v9")
COMMAND_IDS = tuple(f"id{i}" for i in range(12))
"""Few ids, so that streams send some of them again."""

steps = st.lists(
    st.builds(
        RolloutStep,
        weight=st.sampled_from((0.05, 0.25, 0.5, 1.0)),
        min_duration_s=st.sampled_from((0.0, 30.0, 600.0)),
        approval=st.booleans(),
        require_pass=st.booleans(),
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda step: step.weight,
).map(lambda s: tuple(sorted(s, key=lambda step: step.weight)))
plans = st.builds(
    RolloutPlan,
    steps=steps,
    auto_rollback=st.booleans(),
    eval_gate=st.none()
    | st.builds(EvalGate, min_cases=st.integers(1, 20), min_quality=st.just(0.5)),
)
commands = st.builds(
    Command,
    id=st.sampled_from(COMMAND_IDS),
    time=st.just(T0),
    agent=st.just(AGENT),
    action=st.sampled_from(CommandAction),
    version=st.none() | st.sampled_from(VERSION_NAMES),
    plan=st.none() | plans,
    issued_by=st.just("tester"),
    full=st.booleans(),
    expected_generation=st.none() | st.integers(0, 6),
)
rollback_requests = st.builds(
    RollbackCommand,
    id=st.sampled_from(COMMAND_IDS),
    time=st.just(T0),
    agent=st.just(AGENT),
    from_version=st.sampled_from(VERSION_NAMES),
    to_version=st.none() | st.sampled_from(VERSION_NAMES),
    reason=st.just("r"),
    issued_by=st.just("detector"),
)
# Gate readings and judgements name the rollout in progress (filled in when applied) or
# another one.
gate_readings = st.tuples(
    st.just("gate"), st.builds(EvalFigures, st.integers(0, 30), st.floats(0, 1), st.floats(0, 1))
)
judgements = st.tuples(st.just("judge"), st.sampled_from(Verdict), st.integers(-1, 0))
stream = st.lists(
    st.tuples(
        st.sampled_from((0, 1, 45, 700)),
        commands | rollback_requests | st.just(Tick(AGENT)) | gate_readings | judgements,
    ),
    max_size=40,
)


def _concrete(event: object, state: DeploymentState | None, current_rollout: bool) -> Input:
    rollout = (state.rollout_id if state else None) or "none"
    rollout = rollout if current_rollout else "other"
    generation = state.generation if state else 0
    if isinstance(event, tuple) and event[0] == "gate":
        return GateReading(AGENT, rollout, event[1])
    if isinstance(event, tuple) and event[0] == "judge":
        return Judgement(AGENT, rollout, generation + event[2], event[1])
    assert isinstance(event, Command | RollbackCommand | Tick)
    return event


@settings(max_examples=300, deadline=None)
@given(stream, st.lists(st.booleans(), min_size=40, max_size=40))
def test_invariants_hold_over_any_stream(
    events: list[tuple[int, object]], current_rollout: list[bool]
) -> None:
    state: DeploymentState | None = None
    now = T0
    applied_ids: set[str] = set()
    for (seconds, raw), current in zip(events, current_rollout, strict=False):
        now += timedelta(seconds=seconds)
        event = _concrete(raw, state, current)
        result = apply(state, event, now, VERSIONS)
        if isinstance(result, Duplicate):
            assert isinstance(event, Command | RollbackCommand) and event.id in applied_ids
            continue
        if not isinstance(result, Applied):
            continue
        new = result.state
        assert new.generation == (state.generation if state else 0) + 1
        assert 0.0 <= new.canary_weight <= 1.0
        if new.phase not in LIVE or new.phase is Phase.GATED:
            assert new.canary_weight == 0.0
        if new.phase is Phase.ROLLED_BACK:
            assert new.canary_weight == 0.0
        if new.canary_weight > 0:
            assert new.canary_version is not None and new.stable_version is not None
        if new.stable_version is not None:
            assert new.stable_digest == VERSIONS[(AGENT, new.stable_version)]
        if isinstance(event, Command | RollbackCommand):
            assert event.id not in applied_ids, "a command id applied twice"
            applied_ids.add(event.id)
            assert new.last_command_id == event.id
        state = new
