"""CanaryWatch: who is judged on which windows, when a window is complete, what is said
(judgements, alerts on transitions, one rollback command per generation), replays."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

import numpy as np

from schemas.alert import AlertKind, Severity
from schemas.deployment import DeploymentState, Phase
from schemas.judgement import Metric, Verdict
from schemas.plan import JudgeOverrides, RolloutPlan, RolloutStep
from schemas.window_stats import WindowStats
from streams.alerts.text import alert_line, chat_text
from streams.detector.events import event_id, judge_config, judged_generations
from streams.detector.watch import CanaryWatch, Generation, Outputs, Partial, WatchSettings
from tests.unit.detector.sim import EPOCH, WINDOW_S, Arm, window, window_start

SETTINGS = WatchSettings(window_seconds=WINDOW_S, allowed_lateness_s=2.0, emission_margin_s=1.0)
PER_ARM = 250.0
"""Requests per arm and window (50 requests/s each)."""
BAD = Arm(error_rate=0.06)
SAME = Arm()


def state(
    generation: int = 3,
    *,
    phase: Phase = Phase.CANARY,
    weight: float = 0.5,
    auto_rollback: bool = True,
    judge: JudgeOverrides | None = None,
    since: datetime = EPOCH,
) -> DeploymentState:
    plan = RolloutPlan(
        steps=(RolloutStep(weight=0.5, min_duration_s=60),),
        auto_rollback=auto_rollback,
        judge=judge or JudgeOverrides(),
    )
    return DeploymentState(
        agent="agent",
        phase=phase,
        stable_version="v1",
        canary_version="v2",
        canary_weight=weight,
        rollout_id="deploy-1",
        plan=plan,
        step_index=0,
        step_started_at=since,
        generation=generation,
        updated_at=since,
    )


def own(watch: CanaryWatch) -> Generation:
    """Feed the watch a partial of the agent (of another version): the agent is now judged
    here; returns the generation to replay."""
    other = WindowStats.empty("agent", "v0", EPOCH - timedelta(minutes=1), WINDOW_S, "x")
    (generation,) = watch.partials([Partial(other)], EPOCH).replays
    return generation


def started(deployment: DeploymentState | None = None) -> CanaryWatch:
    watch = CanaryWatch(SETTINGS)
    assert watch.deployment(deployment or state()) is None  # no partial of it here yet
    assert not watch.replay(own(watch), [], EPOCH)
    return watch


def due(i: int) -> datetime:
    """The instant window ``i`` is complete."""
    return window_start(i + 1) + timedelta(seconds=SETTINGS.grace_s)


def pair(rng: np.random.Generator, i: int, canary: Arm = SAME) -> list[Partial]:
    return [
        Partial(window(rng, i, "v1", PER_ARM, Arm())),
        Partial(window(rng, i, "v2", PER_ARM, canary)),
    ]


def run(
    watch: CanaryWatch, rng: np.random.Generator, windows: int, canary: Arm = SAME
) -> tuple[Outputs, list[Partial]]:
    """Feed ``windows`` windows, each as it is emitted, and tick when it is complete."""
    out, fed = Outputs(), []
    for i in range(windows):
        partials = pair(rng, i, canary)
        fed += partials
        emitted = window_start(i + 1) + timedelta(seconds=SETTINGS.allowed_lateness_s)
        for step in (watch.partials(partials, emitted), watch.tick(due(i))):
            out.judgements += step.judgements
            out.alerts += step.alerts
            out.rollbacks += step.rollbacks
    return out, fed


def test_a_worse_canary_is_rolled_back_once_with_its_evidence_in_words() -> None:
    watch = started()
    out, _ = run(watch, np.random.default_rng(1), 40, BAD)

    assert len(out.judgements) == 40  # one per compared window
    assert len({j.id for j in out.judgements}) == 40
    assert [j.window_end for j in out.judgements] == [window_start(i + 1) for i in range(40)]
    assert {(j.generation, j.rollout_id, j.canary_version) for j in out.judgements} == {
        (3, "deploy-1", "v2")
    }
    verdicts = [j.verdict for j in out.judgements]
    assert verdicts[-1] is Verdict.ROLLBACK
    first_rollback = verdicts.index(Verdict.ROLLBACK)
    assert set(verdicts[first_rollback:]) == {Verdict.ROLLBACK}  # latched

    (rollback,) = out.rollbacks
    assert rollback.id == event_id("rollback", "deploy-1", 3)
    assert (rollback.agent, rollback.from_version, rollback.issued_by) == (
        "agent",
        "v2",
        "detector",
    )
    critical = [a for a in out.alerts if a.severity is Severity.CRITICAL]
    assert len(critical) == 1 and len(out.alerts) <= 2  # ALERT then ROLLBACK, each once
    alert = critical[0]
    assert rollback.alert_ids[-1] == alert.id and set(rollback.alert_ids) == {
        a.id for a in out.alerts
    }
    assert (alert.kind, alert.metric, alert.version, alert.baseline_version) == (
        AlertKind.CANARY_REGRESSION, Metric.ERROR_RATE, "v2", "v1",
    )  # fmt: skip
    assert alert.evidence is not None and alert.evidence.statistic >= alert.evidence.threshold
    assert alert.message.startswith("agent v2 vs v1: error rate ")
    assert " e-value " in alert.message and "canary requests; rolling back" in alert.message
    assert alert.message in rollback.reason
    # What people read says the evidence once (it once printed it from the fields and again
    # in the message, rounded differently).
    for text in (alert_line(alert), chat_text(alert)):
        assert text.count(" e-value ") == 1 and text.count("error rate ") == 1, text


def test_a_canary_asking_people_far_more_often_is_rolled_back_on_its_approval_rate() -> None:
    watch = started()
    out, _ = run(watch, np.random.default_rng(2), 60, Arm(approvals_per_request=0.5))
    (rollback,) = out.rollbacks
    alert = next(a for a in out.alerts if a.id == rollback.alert_ids[-1])
    assert alert.metric is Metric.APPROVAL_RATE
    assert alert.message.startswith("agent v2 vs v1: approvals asked per request 0.")
    assert " vs 0, e-value " in alert.message  # stable asked none


def test_auto_rollback_off_alerts_without_a_rollback_command() -> None:
    watch = started(state(auto_rollback=False))
    out, _ = run(watch, np.random.default_rng(1), 40, BAD)
    assert out.judgements[-1].verdict is Verdict.ROLLBACK
    assert out.rollbacks == []
    critical = [a for a in out.alerts if a.severity is Severity.CRITICAL]
    assert len(critical) == 1 and critical[0].message.endswith(
        "auto_rollback is off: rollout paused"
    )


def test_a_replay_of_the_stored_partials_reaches_the_same_decisions_and_sends_nothing_twice() -> (
    None
):
    live = started()
    before, fed = run(live, np.random.default_rng(2), 30, BAD)
    assert before.rollbacks

    restarted = CanaryWatch(SETTINGS)
    restarted.published([a.id for a in before.alerts] + [r.id for r in before.rollbacks])
    assert restarted.deployment(state()) is None
    generation = own(restarted)
    assert not restarted.tick(due(29))  # no judging before the replay
    shuffled = list(np.random.default_rng(0).permutation(np.array(fed, dtype=object)))
    again = restarted.replay(generation, shuffled + fed[:10], due(29))  # copies count once

    assert [(j.id, j.verdict, j.windows_compared) for j in again.judgements] == [
        (j.id, j.verdict, j.windows_compared) for j in before.judgements
    ]
    assert again.alerts == [] and again.rollbacks == []
    more = restarted.partials(pair(np.random.default_rng(3), 30, BAD), due(30))
    assert more.rollbacks == [] and more.alerts == [] and len(more.judgements) == 1


def test_a_replay_without_published_ids_makes_the_same_ids() -> None:
    live = started()
    before, fed = run(live, np.random.default_rng(2), 30, BAD)
    restarted = CanaryWatch(SETTINGS)
    restarted.deployment(state())
    generation = own(restarted)
    again = restarted.replay(generation, fed, due(29))
    assert [a.id for a in again.alerts] == [a.id for a in before.alerts]
    assert [r.id for r in again.rollbacks] == [r.id for r in before.rollbacks]


def test_partials_of_a_window_merge_until_it_is_complete_and_late_ones_compare_again() -> None:
    watch = started()
    rng = np.random.default_rng(4)
    split = [
        Partial(window(rng, 0, version, PER_ARM / 2, Arm(), source=f"traces/{p}@0"))
        for version in ("v1", "v2")
        for p in (0, 1)
    ]
    assert not watch.partials(split[:3], due(0) - timedelta(seconds=0.5))  # not complete yet
    first = watch.partials(split[3:], due(0))
    (judgement,) = first.judgements
    assert judgement.windows_compared == 1
    assert judgement.metrics[0].n_canary == split[2].stats.requests + split[3].stats.requests

    correction = [
        Partial(window(rng, 0, v, 3, Arm(), source=f"traces/0@9{v}"), late=True)
        for v in ("v1", "v2")
    ]
    soon = due(0) + timedelta(seconds=3)
    assert not watch.partials(correction, soon)  # corrections wait for each other a moment
    second = watch.tick(soon + timedelta(seconds=SETTINGS.emission_margin_s))
    (again,) = second.judgements
    assert again.windows_compared == 2 and again.id != judgement.id
    assert again.window_end == window_start(1)

    one_arm = Partial(window(rng, 1, "v1", PER_ARM, Arm(), source="traces/0@50"))
    assert not watch.partials([one_arm], due(1))
    assert not watch.tick(window_start(2) + timedelta(seconds=SETTINGS.max_lateness_s + 1))
    late_pair = watch.partials(pair(rng, 20), due(20))
    assert late_pair.judgements[0].windows_unpaired == 1


def test_windows_before_the_generation_and_other_versions_are_not_judged() -> None:
    watch = started(state(since=window_start(2)))
    rng = np.random.default_rng(5)
    for i in (0, 1):
        assert not watch.partials(pair(rng, i), due(i))
    other = Partial(window(rng, 2, "v0", PER_ARM, Arm()))
    assert not watch.partials([other, pair(rng, 2)[1]], due(2))
    out = watch.partials(pair(rng, 3), due(3))
    assert [j.window_end for j in out.judgements] == [window_start(4)]


def test_a_new_generation_gets_a_new_judge_and_a_canary_out_of_traffic_none() -> None:
    watch = started(state(3))
    assert watch.deployment(state(3)) is None  # the same generation again: nothing new
    fourth = watch.deployment(state(4, since=window_start(1)))
    assert fourth is not None and fourth.judged.generation == 4
    assert watch.deployment(state(5, phase=Phase.ROLLED_BACK, weight=0.0)) is None
    assert watch.judged == {}
    assert watch.deployment(state(6, phase=Phase.AWAITING_APPROVAL, weight=0.0)) is None
    paused = watch.deployment(state(7, phase=Phase.PAUSED))
    assert paused is not None
    assert not watch.replay(fourth, [], EPOCH)  # a generation since replaced: ignored


def test_only_the_worker_fed_an_agents_partials_judges_it_until_it_is_revoked() -> None:
    watch = CanaryWatch(SETTINGS)
    assert watch.deployment(state()) is None
    assert watch.judged == {}  # every worker follows deployments; not this one's agent
    generation = own(watch)
    assert watch.judged == {"agent": generation.judged}
    watch.disown()
    assert watch.judged == {}
    assert own(watch) == generation  # fed again: judged again, replayed from the store


def test_an_a_a_canary_is_never_rolled_back_and_passes_at_loose_tolerances() -> None:
    rollbacks = Counter[int]()
    for seed in range(5):
        watch = started()
        out, _ = run(watch, np.random.default_rng(100 + seed), 60)
        rollbacks[seed] = len(out.rollbacks)
        assert Verdict.ROLLBACK not in {j.verdict for j in out.judgements}
    assert sum(rollbacks.values()) == 0

    loose = JudgeOverrides(tolerances={m: 10.0 for m in Metric})
    out, _ = run(started(state(judge=loose)), np.random.default_rng(7), 60)
    assert Verdict.PASS in {j.verdict for j in out.judgements}
    assert out.alerts == []


def test_the_horizon_passes_with_time_alone_and_is_said_once() -> None:
    watch = started(state(judge=JudgeOverrides(horizon_s=30)))
    rng = np.random.default_rng(8)
    out, _ = run(watch, rng, 3)
    assert {j.verdict for j in out.judgements} == {Verdict.CONTINUE}
    later = watch.tick(window_start(0) + timedelta(seconds=31))
    (judgement,) = later.judgements
    assert judgement.verdict is Verdict.INCONCLUSIVE
    (alert,) = later.alerts
    assert alert.kind is AlertKind.INCONCLUSIVE and "no decision within 30 s" in alert.message
    assert not watch.tick(window_start(0) + timedelta(seconds=40))
    assert watch.partials(pair(rng, 3), due(3)).alerts == []


def test_a_partial_of_another_agent_waits_for_nobody() -> None:
    watch = started()
    stranger = WindowStats.empty("other", "v2", window_start(0), WINDOW_S, "x")
    assert not watch.partials([Partial(stranger)], due(0))


def test_a_rollouts_alpha_is_split_over_the_generations_it_judges() -> None:
    plan = RolloutPlan(
        steps=(
            RolloutStep(weight=0.1),
            RolloutStep(weight=0.5, approval=True),
            RolloutStep(weight=1.0),
        ),
        judge=JudgeOverrides(alpha_rollback=0.014, alpha_alert=0.07),
    )
    config = judge_config(plan)
    # 3 steps and their latched PASS, and the wait for approval before the second.
    assert judged_generations(plan) == 7
    assert (config.alpha_rollback, config.alpha_alert) == (0.002, 0.01)
