"""The loop closed on the real pipeline: traffic routed by SDK routers through a worker (which
runs the detector) and a controller, separate processes on the session's broker and chDB.

A canary whose error rate goes 1 % -> 6 % is rolled back by the detector's RollbackCommand
(also when the worker is SIGKILLed mid-canary: exactly one command), an A/A canary is
promoted through require_pass steps, and ``auto_rollback: false`` pauses instead. Figures
(seconds from onset to the rollback) are printed, not asserted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.alert import Alert, AlertKind, Severity
from schemas.deployment import Phase
from schemas.judgement import Judgement, Metric, Verdict
from schemas.plan import RolloutStep
from schemas.rollback import RollbackCommand
from streams.settings import Settings
from tests.integration.controller_harness import wait_until
from tests.integration.harness import wait_for
from tests.integration.loop_harness import (
    AGENT,
    CANARY,
    HELD,
    LOOSE,
    STABLE,
    Loop,
    plan,
    running_loop,
)


@pytest.fixture
def loop(kafka_settings: Settings, tmp_path: Path) -> Iterator[Loop]:
    with running_loop(kafka_settings, tmp_path) as running:
        yield running


def since(moment: datetime, then: datetime) -> float:
    return (then - moment).total_seconds()


def test_a_canary_whose_error_rate_rises_is_rolled_back_and_every_record_agrees(
    loop: Loop,
) -> None:
    deployed = loop.deploy(plan(RolloutStep(weight=0.5, min_duration_s=HELD)))
    with loop.traffic(canary_error_rate=0.01):
        time.sleep(10)
    onset = datetime.now(UTC)
    with loop.traffic(canary_error_rate=0.06):
        state = loop.wait_for(Phase.ROLLED_BACK)
        switched = wait_until(lambda: loop.router.deployment(AGENT) == state, 30)
        routed = {loop.router.route(AGENT, f"user-{i}", "v0").version for i in range(1000)}
    assert switched and routed == {STABLE}

    (command,) = loop.events(RollbackCommand)
    assert (command.agent, command.from_version, command.issued_by) == (AGENT, CANARY, "detector")
    assert state.change is not None
    assert (state.change.cause, state.change.command_id, state.change.issued_by) == (
        "rollback", command.id, "detector",
    )  # fmt: skip
    alerts = {a.id: a for a in loop.events(Alert)}
    assert set(command.alert_ids) <= alerts.keys()
    critical = alerts[command.alert_ids[-1]]
    assert (critical.kind, critical.severity, critical.metric) == (
        AlertKind.CANARY_REGRESSION, Severity.CRITICAL, Metric.ERROR_RATE,
    )  # fmt: skip
    assert (critical.rollout_id, critical.generation) == (deployed.rollout_id, deployed.generation)
    assert critical.message in command.reason
    judgements = [j for j in loop.events(Judgement) if j.rollout_id == deployed.rollout_id]
    assert {j.generation for j in judgements} == {deployed.generation}
    verdicts = [j.verdict for j in judgements]
    assert Verdict.ROLLBACK in verdicts and Verdict.PASS not in verdicts[verdicts.index(
        Verdict.ROLLBACK):]  # fmt: skip
    first_rollback = next(j for j in judgements if j.verdict is Verdict.ROLLBACK)
    audit = loop.worker.sql(
        "SELECT cause, command_id, issued_by, to_phase FROM coalmine.deployment_events FINAL "
        f"WHERE agent = '{AGENT}' AND generation = {state.generation}"
    )
    assert [tuple(row) for row in audit] == [("rollback", command.id, "detector", "rolled_back")]
    stored = f"FROM coalmine.{{}} FINAL WHERE agent = '{AGENT}'"
    rows = wait_for(loop.worker, f"SELECT count() {stored.format('rollbacks')}", 1)
    assert rows == 1
    (rollback_row,) = loop.worker.sql(
        f"SELECT id, issued_by, alert_ids {stored.format('rollbacks')}"
    )
    assert tuple(rollback_row) == (command.id, "detector", list(command.alert_ids))
    in_rollout = f"{stored} AND rollout_id = '{deployed.rollout_id}'"
    mine = [a for a in alerts.values() if a.rollout_id == deployed.rollout_id]
    counted = f"SELECT count() {in_rollout.format('alerts')}"
    assert wait_for(loop.worker, counted, len(mine)) == len(mine)
    alert_rows = loop.worker.sql(f"SELECT id, severity, message {in_rollout.format('alerts')}")
    assert (critical.id, "critical", critical.message) in {tuple(row) for row in alert_rows}
    judged = f"SELECT count() {in_rollout.format('judgements')}"
    assert wait_until(  # each id once; re-read, as a last window may have been judged since
        lambda: (
            loop.worker.scalar(judged)
            == len({j.id for j in loop.events(Judgement) if j.rollout_id == deployed.rollout_id})
        ),
        60,
    )
    (verdict,) = loop.worker.sql(
        f"SELECT verdict {in_rollout.format('judgements')} AND id = '{first_rollback.id}'"
    )
    assert tuple(verdict) == ("rollback",)
    print(
        f"\nrollback: onset -> ROLLBACK judgement {since(onset, first_rollback.time):.1f} s, "
        f"-> RollbackCommand {since(onset, command.time):.1f} s, "
        f"-> rolled back {since(onset, state.updated_at or onset):.1f} s; "
        f"{first_rollback.windows_compared} windows compared; alert: {critical.message}"
    )


def test_an_a_a_canary_is_promoted_through_require_pass_steps_and_never_rolled_back(
    loop: Loop,
) -> None:
    steps = (
        RolloutStep(weight=0.4, require_pass=True),
        RolloutStep(weight=0.5, require_pass=True),
    )
    deployed = loop.deploy(plan(*steps, judge=LOOSE))
    # Each step's judge first freezes stable's p95 / p99 from 500 requests, then needs every
    # metric's confidence sequence within tolerance: 60 requests/s keeps that under a minute.
    with loop.traffic(canary_error_rate=0.01, rate=60.0):
        state = loop.wait_for(Phase.PROMOTED, timeout_s=240)
    assert state.stable_version == CANARY
    assert loop.events(RollbackCommand) == []
    judgements = [j for j in loop.events(Judgement) if j.rollout_id == deployed.rollout_id]
    assert Verdict.ROLLBACK not in {j.verdict for j in judgements}
    passed = sorted({j.generation for j in judgements if j.verdict is Verdict.PASS})
    assert len(passed) >= 2  # a PASS in each step's generation
    assert state.updated_at is not None and deployed.updated_at is not None
    print(
        f"\nA/A: promoted {since(deployed.updated_at, state.updated_at):.1f} s after the deploy; "
        f"PASS in generations {passed}"
    )


def test_the_rollback_comes_once_when_the_worker_is_killed_mid_canary(loop: Loop) -> None:
    deployed = loop.deploy(plan(RolloutStep(weight=0.5, min_duration_s=HELD)))
    with loop.traffic(canary_error_rate=0.06):
        assert wait_until(lambda: len(loop.events(Judgement)) >= 2, 60)
        assert loop.events(RollbackCommand) == []  # mid-canary: not decided yet
        before = {j.id for j in loop.events(Judgement)}
        loop.worker.kill()
        killed = datetime.now(UTC)
        loop.worker.start()
        state = loop.wait_for(Phase.ROLLED_BACK, timeout_s=150)
        time.sleep(3)  # what a second decision would have sent by now
        (command,) = loop.events(RollbackCommand)
    assert state.change is not None and state.change.command_id == command.id
    judged_again = [j.id for j in loop.events(Judgement)].count
    assert all(judged_again(id) == 2 for id in before)  # replayed: the same windows, same ids
    assert deployed.updated_at is not None
    print(
        f"\nkilled {since(deployed.updated_at, killed):.1f} s after the deploy; RollbackCommand "
        f"{since(killed, command.time):.1f} s after the kill"
    )


def test_without_auto_rollback_the_canary_is_paused_and_alerted(loop: Loop) -> None:
    deployed = loop.deploy(plan(RolloutStep(weight=0.5, min_duration_s=HELD), auto_rollback=False))
    with loop.traffic(canary_error_rate=0.06):
        state = loop.wait_for(Phase.PAUSED)
    assert state.change is not None and state.change.cause == "judgement"
    assert loop.events(RollbackCommand) == []
    critical = [a for a in loop.events(Alert) if a.severity is Severity.CRITICAL]
    assert critical and critical[0].generation == deployed.generation
    assert critical[0].message.endswith("auto_rollback is off: rollout paused")
    assert state.canary_weight == deployed.canary_weight  # paused, still serving
