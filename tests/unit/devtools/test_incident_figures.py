"""The incident benchmark's bookkeeping: an incident's times from its onset, misses kept as
infinite delays, the pipeline's own cost, and the figures over many incidents."""

from __future__ import annotations

import json
import math
from datetime import timedelta

import pytest

from schemas.deployment import Phase
from schemas.judgement import Verdict
from streams.detector.bench.scenarios import Family
from streams.detector.events import judge_config
from streams.detector.judge import JudgeConfig
from streams.devtools.bench.incident import Options
from streams.devtools.bench.incident_figures import (
    Incident,
    Scenario,
    budget_s,
    figures,
    fmt_s,
    incident,
    judge_scenario,
    with_judge,
)
from streams.devtools.loop import RolloutWatch
from tests.unit.devtools.test_loop import T0, judgement, rollback, state

ONSET = (T0 + timedelta(seconds=30)).timestamp()
SCENARIO = Scenario(error_rate=0.01, canary_error_rate=0.02)


def test_an_incident_is_timed_from_its_onset() -> None:
    watch = RolloutWatch()
    rollout = watch.track(state("r1", 2), at=T0.timestamp())
    watch.judgement(judgement("r1", 9, Verdict.ROLLBACK), ONSET + 20.0)  # window ends T0 + 45 s
    watch.rollback(rollback(47.0), ONSET + 18.5)
    watch.deployment(state("r1", 3, Phase.ROLLED_BACK), ONSET + 18.6)

    found = incident(SCENARIO, 1, rollout, ONSET, [ONSET + 18.6, ONSET + 18.7, ONSET + 18.65])

    assert found.decided_s == pytest.approx(15.0)  # the deciding window's end
    assert found.rollback_s == pytest.approx(18.5)
    assert found.routers_s == pytest.approx(18.7)  # the last router
    assert found.pipeline_s == pytest.approx(3.5)
    assert found.to_routers_s == pytest.approx(3.7)
    assert math.isinf(found.alert_s)


def test_a_missed_incident_has_infinite_delays_and_no_pipeline_cost() -> None:
    watch = RolloutWatch()
    rollout = watch.track(state("r1", 2), at=T0.timestamp())

    found = incident(SCENARIO, 1, rollout, ONSET, [])

    assert math.isinf(found.rollback_s) and math.isinf(found.routers_s)
    assert math.isnan(found.pipeline_s)


def test_a_router_that_did_not_switch_makes_the_routers_time_a_miss() -> None:
    watch = RolloutWatch()
    rollout = watch.track(state("r1", 2), at=T0.timestamp())
    watch.rollback(rollback(47.0), ONSET + 18.5)

    assert math.isinf(incident(SCENARIO, 1, rollout, ONSET, [ONSET + 19.0, None]).routers_s)


def made(rollback_s: float, decided_s: float) -> Incident:
    routers = rollback_s + 0.1
    return Incident(SCENARIO.name, "a", 1, ONSET, math.inf, decided_s, rollback_s, routers)


def test_figures_keep_misses_in_the_delays_and_out_of_the_pipeline_cost() -> None:
    # Ten incidents: eight rolled back after 10..80 s (the judge's window 4 s earlier), two
    # missed.
    incidents = [made(10.0 * k, 10.0 * k - 4.0) for k in range(1, 9)]
    incidents += [made(math.inf, math.inf), made(math.inf, math.inf)]

    found = figures(SCENARIO, incidents)

    assert (found.incidents, found.rollbacks) == (10, 8)
    assert found.rollback_p50_s == pytest.approx(50.0)  # nearest rank: the 5th of 10
    assert math.isinf(found.rollback_p90_s)  # the 9th of 10: a miss
    assert found.pipeline_p50_s == pytest.approx(4.0)
    assert found.pipeline_max_s == pytest.approx(4.0)
    assert found.to_routers_p50_s == pytest.approx(4.1)
    document = json.loads(json.dumps(found.as_json()))
    assert document["rollback_p90_s"] is None  # a miss: no number


def test_nearest_rank_p90_of_ten_is_the_ninth() -> None:
    found = figures(SCENARIO, [made(float(k), float(k) - 1) for k in range(1, 11)])

    assert found.rollback_p90_s == 9.0
    assert found.rollback_p50_s == 5.0


def test_an_aa_scenario_is_named_and_simulated_as_one() -> None:
    aa = Scenario(0.01, 0.01)
    simulated = judge_scenario(aa, rps=100, share=0.1, onset_s=30, observe_s=60, replications=3)

    assert aa.aa and not SCENARIO.aa
    assert aa.name == "A/A at 1%"
    assert SCENARIO.name == "errors 1% -> 2%"
    assert simulated.family is Family.AA
    assert simulated.canary_traffic == simulated.traffic  # the canary no different
    assert (simulated.onset_s, simulated.horizon_s, simulated.rps) == (30, 90, 100)


def test_the_pure_judge_finds_a_large_regression_on_the_same_scenario() -> None:
    big = Scenario(0.01, 0.2)
    simulated = judge_scenario(big, rps=100, share=0.1, onset_s=30, observe_s=300, replications=4)

    found = with_judge(figures(big, []), simulated, processes=1)

    assert found.judge_runs == 4
    assert found.judge_rollbacks == 4
    assert found.judge_p90_s is not None and found.judge_p90_s < 300


def test_the_budget_and_the_formatting() -> None:
    assert budget_s(5, 2.0) == 9.0
    assert fmt_s(12.34) == "12.3 s"
    assert fmt_s(300.0) == "5.0 min"
    assert fmt_s(math.inf) == "missed"
    assert fmt_s(None) == fmt_s(math.nan) == "-"


def test_judge_window_times_come_from_event_time_not_reading_time() -> None:
    watch = RolloutWatch()
    rollout = watch.track(state("r1", 2), at=T0.timestamp())
    late = T0 + timedelta(hours=1)
    watch.judgement(judgement("r1", 9, Verdict.ROLLBACK), late.timestamp())

    found = incident(SCENARIO, 1, rollout, ONSET, [])

    assert found.decided_s == pytest.approx(15.0)


def test_the_pipeline_judges_each_generation_at_the_pure_judges_alphas() -> None:
    config, pure = judge_config(Options().plan()), JudgeConfig()
    assert (config.alpha_rollback, config.alpha_alert) == (pure.alpha_rollback, pure.alpha_alert)
