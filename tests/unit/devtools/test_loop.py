"""What the demo and the incident benchmark make of the loop's events: which rollout an event
belongs to, what is new, and the first alert, rollback command and deciding judgement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.alert import Alert, AlertKind, Severity
from schemas.deployment import DeploymentState, Phase
from schemas.judgement import Judgement, Verdict
from schemas.rollback import RollbackCommand
from schemas.window_stats import WindowStats
from streams.devtools.loop import RolloutWatch, SlowWindow, WindowLag

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def state(rollout: str, generation: int, phase: Phase = Phase.CANARY) -> DeploymentState:
    return DeploymentState(
        agent="support-bot",
        phase=phase,
        stable_version="v12",
        canary_version="v13",
        canary_weight=0.0 if phase is Phase.ROLLED_BACK else 0.2,
        rollout_id=rollout,
        generation=generation,
        updated_at=T0 + timedelta(seconds=generation),
    )


def judgement(rollout: str, n: int, verdict: Verdict, generation: int = 2) -> Judgement:
    return Judgement(
        id=f"j-{rollout}-{n}",
        time=T0 + timedelta(seconds=5 * n),
        agent="support-bot",
        rollout_id=rollout,
        generation=generation,
        stable_version="v12",
        canary_version="v13",
        window_end=T0 + timedelta(seconds=5 * n),
        windows_compared=n,
        verdict=verdict,
        metrics=(),
        explanation="x",
    )


def alert(n: int, rollout: str | None) -> Alert:
    return Alert(
        id=f"a-{n}",
        time=T0 + timedelta(seconds=30 + n),
        agent="support-bot",
        version="v13",
        rollout_id=rollout,
        kind=AlertKind.CANARY_REGRESSION,
        severity=Severity.WARNING,
        detector="canary_judge",
        message="worse",
    )


def rollback(seconds: float, version: str = "v13") -> RollbackCommand:
    return RollbackCommand(
        id=f"r-{seconds}",
        time=T0 + timedelta(seconds=seconds),
        agent="support-bot",
        from_version=version,
        reason="worse",
        issued_by="detector",
    )


def test_events_of_a_tracked_rollout_are_kept_and_others_ignored() -> None:
    watch = RolloutWatch()
    rollout = watch.track(state("r1", 2), at=100.0)

    assert watch.judgement(judgement("other", 1, Verdict.ALERT), 101.0) == []
    assert watch.deployment(state("other", 3), 101.0) == []
    assert watch.judgement(judgement("r1", 1, Verdict.CONTINUE), 101.0) == []  # nothing to say
    [(owner, seen)] = watch.judgement(judgement("r1", 2, Verdict.ALERT), 102.0)
    assert owner is rollout
    assert isinstance(seen.event, Judgement)
    assert (seen.event.verdict, seen.at) == (Verdict.ALERT, 102.0)
    assert watch.judgement(judgement("r1", 3, Verdict.ALERT), 103.0) == []  # no change
    watch.judgement(judgement("r1", 4, Verdict.ROLLBACK), 104.0)
    watch.judgement(judgement("r1", 5, Verdict.ROLLBACK), 105.0)

    assert rollout.judgements == 5
    assert rollout.deciding is not None
    assert rollout.deciding.windows_compared == 4


def test_the_first_alert_and_the_rollback_command_of_the_rollout_count() -> None:
    watch = RolloutWatch()
    rollout = watch.track(state("r1", 2), at=100.0)

    assert len(watch.alert(alert(1, "r1"), 110.0)) == 1
    assert watch.alert(alert(2, "r1"), 111.0) == []
    # A rollback command names no rollout: the agent's canary, issued after the deploy.
    assert watch.rollback(rollback(-10.0), 112.0) == []  # before the deploy: an earlier run
    assert watch.rollback(rollback(40.0, version="v14"), 112.0) == []  # another version
    assert len(watch.rollback(rollback(40.0), 113.0)) == 1
    assert watch.rollback(rollback(41.0), 114.0) == []

    assert rollout.first_alert is not None and rollout.first_alert.at == 110.0
    assert rollout.rollback is not None and rollout.rollback.at == 113.0


def test_a_rollback_command_goes_to_the_latest_deploy_of_that_canary() -> None:
    watch = RolloutWatch()
    first = watch.track(state("r1", 2), at=100.0)
    second = watch.track(state("r2", 4), at=200.0)  # deployed again after r1 was rolled back

    watch.rollback(rollback(50.0), 250.0)

    assert first.rollback is None
    assert second.rollback is not None


def test_states_move_the_rollout_forward_and_an_old_one_is_ignored() -> None:
    watch = RolloutWatch()
    rollout = watch.track(state("r1", 2), at=100.0)

    assert watch.deployment(state("r1", 2), 101.0) == []  # the deployed state itself
    assert len(watch.deployment(state("r1", 3, Phase.ROLLED_BACK), 102.0)) == 1
    assert watch.deployment(state("r1", 3, Phase.ROLLED_BACK), 103.0) == []  # read again

    assert rollout.state.phase is Phase.ROLLED_BACK
    ended = rollout.ended(Phase.ROLLED_BACK)
    assert ended is not None and ended.at == 102.0
    assert rollout.ended(Phase.PROMOTED) is None


def test_a_pass_is_news_once_per_generation() -> None:
    watch = RolloutWatch()
    rollout = watch.track(state("r1", 2), at=100.0)

    assert len(watch.judgement(judgement("r1", 1, Verdict.PASS, generation=2), 101.0)) == 1
    assert watch.judgement(judgement("r1", 2, Verdict.CONTINUE, generation=2), 102.0) == []
    assert watch.judgement(judgement("r1", 3, Verdict.PASS, generation=2), 103.0) == []
    assert len(watch.judgement(judgement("r1", 4, Verdict.PASS, generation=3), 104.0)) == 1

    assert [p.event.generation for p in rollout.passes] == [2, 3]


def window(version: str, start_s: int) -> WindowStats:
    return WindowStats(
        agent="support-bot",
        version=version,
        window_start=T0 + timedelta(seconds=start_s),
        window_seconds=5,
        source=f"traces/0@{start_s}",
    )


def test_a_window_lag_is_its_first_partial_after_its_end() -> None:
    lag = WindowLag()
    end = (T0 + timedelta(seconds=5)).timestamp()
    lag.add(window("v12", 0), end + 2.5)
    lag.add(window("v12", 0), end + 9.0)  # another partition's partial, or a correction
    lag.add(window("v13", 0), end + 3.0)

    assert sorted(lag.lags_s) == [2.5, 3.0]
    lag.add(window("v12", 60), end + 60 + 62.0)  # after the traffic stopped: the idle flush
    assert sorted(lag.during([(end - 10, end + 30)])) == [2.5, 3.0]
    assert lag.slowest([(end - 10, end + 30)], 1) == [
        SlowWindow("support-bot", "v13", T0.isoformat(), 3.0)
    ]
