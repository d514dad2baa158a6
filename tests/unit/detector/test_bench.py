"""The detector benchmark: simulator, common random numbers, summaries, baseline judges, and a
tiny end-to-end run of the harness.

Simulator tolerances are five standard errors of the quantity checked, computed from the
simulated model itself, so a correct simulator fails a check with probability < 1e-6 (and
the seeds are fixed, so the suite is deterministic either way).
"""

from __future__ import annotations

import json
import math
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from schemas.judgement import Verdict
from schemas.window_stats import (
    LATENCY_BUCKET_COUNT,
    WindowStats,
    quantile_from_buckets,
)
from streams.detector.bench import cli
from streams.detector.bench.baselines import (
    METRICS,
    FlaggerConfig,
    FlaggerJudge,
    KayentaConfig,
    KayentaJudge,
    classify_metric,
    classify_metrics,
    failed_checks,
    hodges_lehmann_interval,
    minute_values,
)
from streams.detector.bench.runner import (
    PER_SPAN_COST,
    Observer,
    per_span_cost,
    run_judge,
    stream_windows,
)
from streams.detector.bench.scenarios import (
    LOOP_SCENARIO,
    Family,
    Regression,
    Scenario,
    build_grid,
)
from streams.detector.bench.simulate import (
    EPOCH,
    Stream,
    expected_failures_excess,
    replication_rng,
    simulate,
)
from streams.detector.bench.summary import (
    Outcome,
    quantile,
    run_length_bounds,
    share_at_most,
    summarize,
)

K = 5.0  # standard errors of tolerance


def _big_stream(regression: Regression | None = None, onset_s: float = 0.0) -> Stream:
    scenario = Scenario(
        "t",
        Family.REGRESSION,
        1,
        rps=1000.0,
        share=0.5,
        onset_s=onset_s,
        horizon_s=1800.0,
        regression=regression or Regression(),
    )
    return simulate(scenario, replication_rng(11, 0))


def _close(observed: float, expected: float, se: float) -> None:
    assert abs(observed - expected) <= K * se, (observed, expected, se)


def test_simulated_counts_have_the_model_means() -> None:
    arm = _big_stream().canary
    n = int(arm.requests.sum())
    expected_n = 1000 * 0.5 * 1800
    _close(n, expected_n, math.sqrt(expected_n))
    _close(arm.errors.sum() / n, 0.01, math.sqrt(0.01 * 0.99 / n))
    _close(arm.tasks_completed.sum() / n, 0.90, math.sqrt(0.09 / n))
    calls = int(arm.tool_calls.sum())
    _close(calls / n, 2.0, math.sqrt(2.0 / n))
    _close(arm.tool_errors.sum() / calls, 0.02, math.sqrt(0.02 * 0.98 / calls))
    assert (arm.latency_buckets.sum(axis=1) == arm.requests).all()


def test_simulated_sums_have_the_model_means() -> None:
    arm = _big_stream().canary
    n = int(arm.requests.sum())
    mu, sigma = math.log(0.01), 0.8
    _close(arm.log_cost_sum.sum() / n, mu, sigma / math.sqrt(n))
    log_var = arm.log_cost_sumsq.sum() / n - (arm.log_cost_sum.sum() / n) ** 2
    _close(log_var, sigma**2, sigma**2 * math.sqrt(2 / n))
    mean_cost = math.exp(mu + sigma**2 / 2)
    sd_cost = mean_cost * math.sqrt(math.expm1(sigma**2))
    _close(arm.cost_sum.sum() / n, mean_cost, sd_cost / math.sqrt(n))
    q_var = 0.8 * 0.2 / 11
    _close(arm.quality_sum.sum() / n, 0.80, math.sqrt(q_var / n))
    q_second = arm.quality_sumsq.sum() / n - (arm.quality_sum.sum() / n) ** 2
    assert abs(q_second - q_var) <= 0.05 * q_var
    # The histogram's median is within one bucket (4.7 %) plus sampling noise of 1.5 s.
    median = quantile_from_buckets(arm.latency_buckets.sum(axis=0).tolist(), 0.5)
    assert abs(median / 1500.0 - 1.0) <= 0.06


def test_regressions_apply_to_the_canary_after_the_onset_only() -> None:
    stream = _big_stream(Regression(error_rate=0.02, latency_factor=1.5), onset_s=900.0)
    assert stream.baseline is not None
    half = stream.windows // 2
    for arm, before, after in ((stream.canary, 0.01, 0.02), (stream.baseline, 0.01, 0.01)):
        for part, rate in ((slice(0, half), before), (slice(half, None), after)):
            n = int(arm.requests[part].sum())
            _close(arm.errors[part].sum() / n, rate, math.sqrt(rate * (1 - rate) / n))
    late = stream.canary.latency_buckets[half:].sum(axis=0).tolist()
    assert abs(quantile_from_buckets(late, 0.5) / 2250.0 - 1.0) <= 0.06
    tail = Regression(latency_factor=1.5, latency_tail_only=True).apply(
        Scenario("x", Family.AA, 1).traffic
    )
    assert tail.latency_median_ms == 1500.0
    assert math.isclose(math.exp(2.3263478740408408 * (tail.latency_sigma - 0.5)), 1.5)


def test_a_looping_canary_costs_more_per_request_and_the_same_per_call() -> None:
    stream = _big_stream(Regression(llm_calls_per_request=2), onset_s=900.0)
    arm, half = stream.canary, stream.windows // 2
    mu, sigma = math.log(0.01), 0.8
    # ln of the sum of two lognormal calls: mean mu + 0.835, sd 0.593 (Monte Carlo, 2e6 draws)
    looped_mean, looped_sd = mu + 0.835, 0.593
    for part, calls, request_mean, request_sd in (
        (slice(0, half), 1, mu, sigma),
        (slice(half, None), 2, looped_mean, looped_sd),
    ):
        n = int(arm.requests[part].sum())
        assert arm.llm_calls[part].sum() == calls * n
        m = calls * n
        _close(arm.log_cost_sum[part].sum() / m, mu, sigma / math.sqrt(m))
        per_request = arm.request_log_cost_sum[part].sum() / n
        # the simulator's Fenton-Wilkinson law is within 0.01 of the exact log-mean
        assert abs(per_request - request_mean) <= K * request_sd / math.sqrt(n) + 0.01
    windows = stream_windows(stream)
    _, canary = windows[-1]
    assert canary is not None
    assert WindowStats.model_validate(canary.model_dump()) == canary
    assert canary.cost_count == 2 * canary.request_cost_count == 2 * canary.requests
    read_per_span = per_span_cost(canary)
    assert read_per_span is not None
    assert read_per_span.request_cost_count == canary.cost_count
    assert read_per_span.request_log_cost_sum == canary.log_cost_sum


def test_common_random_numbers_give_identical_streams() -> None:
    scenario = Scenario("t", Family.AA, 1, horizon_s=300.0)
    first = stream_windows(simulate(scenario, replication_rng(3, 7)))
    again = stream_windows(simulate(scenario, replication_rng(3, 7)))
    other = stream_windows(simulate(scenario, replication_rng(3, 8)))
    assert first == again
    assert first != other
    for baseline, canary in first[:5]:
        for window in (baseline, canary):
            assert window is not None
            assert WindowStats.model_validate(window.model_dump()) == window


def test_missing_windows_arrive_as_none() -> None:
    scenario = Scenario("t", Family.AA, 1, horizon_s=3600.0, missing_window_rate=0.1)
    windows = stream_windows(simulate(scenario, replication_rng(1, 0)))
    missing = sum(1 for b, c in windows for w in (b, c) if w is None)
    _close(missing / (2 * len(windows)), 0.1, math.sqrt(0.09 / (2 * len(windows))))


def test_excess_failures_count_errors_above_the_baseline_rate() -> None:
    stream = _big_stream(Regression(error_rate=0.02))
    n = int(stream.canary.requests.sum())
    _close(expected_failures_excess(stream)[-1], 0.01 * n, math.sqrt(0.02 * n))


def test_wilson_interval_and_quantiles_by_hand() -> None:
    outcomes = [Outcome(math.inf, math.inf, math.inf, 0.0, 3600.0, 0.0, 720)] * 97 + [
        Outcome(60.0, 30.0, math.inf, 1.0, 60.0, 0.0, 12)
    ] * 3
    row = summarize("j", Scenario("aa", Family.AA, 100), outcomes)
    # 3 of 100 at 95 %: p = .03, z = 1.96; centre (p + z²/2n)/(1 + z²/n) = .04739,
    # half-width z·sqrt(p(1-p)/n + z²/4n²)/(1 + z²/n) = .03714.
    assert row.false_alarm_rate == 0.03
    assert row.false_alarm_wilson_low == pytest.approx(0.01025, abs=1e-4)
    assert row.false_alarm_wilson_high == pytest.approx(0.08453, abs=1e-4)
    assert row.delay_median_s == math.inf
    assert quantile([10.0, 20.0, math.inf, math.inf], 0.5) == 20.0
    assert quantile([10.0, 20.0, math.inf, math.inf], 0.9) == math.inf
    assert quantile([5.0, 1.0, 3.0], 0.5) == 3.0
    assert share_at_most([10.0, 400.0, math.inf], 300.0) == pytest.approx(1 / 3)
    assert json.loads(json.dumps(row.as_json(), allow_nan=False))["delay_p90_s"] == "inf"


def test_regression_rows_measure_delay_from_the_onset() -> None:
    scenario = Scenario("r", Family.REGRESSION, 4, onset_s=600.0)
    alarms = [300.0, 660.0, 900.0, math.inf]
    outcomes = [Outcome(a, a, math.inf, 0.0, min(a, 4200.0), 0.0, 1) for a in alarms]
    row = summarize("j", scenario, outcomes)
    assert row.false_alarm_rate == 0.25
    assert row.delay_median_s == 60.0  # delays 0, 60, 300, inf
    assert row.delay_p90_s == math.inf
    assert (row.power_5min, row.power_15min) == (0.75, 0.75)


def test_run_length_bound_without_alarms_is_the_rule_of_three() -> None:
    day = 86_400.0
    outcomes = [Outcome(math.inf, math.inf, math.inf, 0.0, day, 0.0, 17_280)] * 3
    estimate, lower = run_length_bounds(outcomes)
    assert estimate == math.inf
    assert lower == pytest.approx(3 * day / 2.9957, rel=1e-4)
    one = [*outcomes[:2], Outcome(day / 2, day / 2, math.inf, 0.0, day / 2, 0.0, 1)]
    assert run_length_bounds(one)[0] == pytest.approx(2.5 * day)


def test_hodges_lehmann_interval_by_hand() -> None:
    # Differences 2,1,3,2,4,3 sorted: 1,2,2,3,3,4; median 2.5. At confidence 0.2,
    # z = 0.2533 and k = floor(3 - 0.2533·sqrt(3)) = 2: the interval is [D_2, D_5] = [2, 3].
    lower, estimate, upper = hodges_lehmann_interval(np.array([3.0, 4, 5]), np.array([1.0, 2]), 0.2)
    assert (lower, estimate, upper) == (2.0, 2.5, 3.0)
    assert hodges_lehmann_interval(np.array([1.0]), np.array([2.0]), 0.98)[0] == -math.inf


def _window(minute_s: float, requests: int, errors: int, latency_ms: float) -> WindowStats:
    return WindowStats.from_arrays(
        agent="a",
        version="v",
        window_start=EPOCH + timedelta(seconds=minute_s),
        window_seconds=5,
        source="s",
        latency_ms=np.full(requests, latency_ms),
        error=np.arange(requests) < errors,
        cost_usd=np.full(requests, 0.01),
        quality=np.full(requests, 0.8),
        task_completed=np.ones(requests, dtype=bool),
        tool_calls=requests,
        tool_errors=0,
    )


def _feed(judge: Observer, canary_errors: int, canary_latency: float, minutes: int) -> float:
    """Seconds to the judge's ROLLBACK (inf if none) on a hand-made stream with 100
    requests per 5 s window per arm, 1 baseline error per window, latency 1 s."""
    for i in range(12 * minutes):
        jitter = 1.0 + 0.01 * ((i * 7) % 5)
        base = _window(5.0 * i, 100, 1, 1000.0 * jitter)
        can = _window(5.0 * i, 100, canary_errors, canary_latency * jitter)
        now = EPOCH + timedelta(seconds=5.0 * (i + 1))
        if judge.observe(base, can, now).verdict is Verdict.ROLLBACK:
            return 5.0 * (i + 1)
    return math.inf


def test_minute_values_of_a_hand_made_minute() -> None:
    window = _window(0.0, 100, 3, 1000.0)
    sums = np.array([100, 3, 100, 100, 100, 0, 1.0, 100, 80.0])
    values = dict(
        zip(METRICS, minute_values(sums, np.asarray(window.latency_buckets)), strict=True)
    )
    assert values["error_rate"] == 0.03
    assert values["cost_per_request"] == pytest.approx(0.01)
    assert values["quality_shortfall"] == pytest.approx(0.2)
    assert abs(values["latency_p99_ms"] / 1000.0 - 1) < 0.05
    empty = minute_values(np.zeros(9), np.zeros(LATENCY_BUCKET_COUNT, dtype=np.int64))
    assert np.isnan(empty).all()


def test_flagger_counts_failed_checks_until_the_threshold() -> None:
    # 10 % canary errors break the 5 % absolute limit every minute: the 5th check rolls back.
    assert _feed(FlaggerJudge(), 10, 1000.0, 10) == 300.0
    # Canary identical to the baseline: no check fails.
    assert _feed(FlaggerJudge(), 1, 1000.0, 10) == math.inf
    # 3 % errors: fine in absolute terms, 3x the baseline in relative terms.
    assert _feed(FlaggerJudge(FlaggerConfig(relative_factor=None)), 3, 1000.0, 10) == math.inf
    assert _feed(FlaggerJudge(), 3, 1000.0, 10) == 300.0
    named = failed_checks(np.full(len(METRICS), np.nan), np.ones(len(METRICS)), FlaggerConfig())
    assert named == ["no canary traffic"]


def test_kayenta_fails_a_clear_shift_and_passes_identical_arms() -> None:
    # Five minutes of canary latency 2x the baseline's: every canary minute is above every
    # baseline minute, the 0.98 HL interval is [min diff, max diff] > 0.25 x estimate.
    assert _feed(KayentaJudge(), 1, 2000.0, 10) == 300.0
    assert _feed(KayentaJudge(), 1, 1000.0, 10) == math.inf


def test_grid_has_the_headline_and_enough_aa_replications() -> None:
    full = {s.name: s for s in build_grid(quick=False)}
    assert full["aa-1h"].replications >= 2000
    assert (full["aa-1h"].share, full["aa-1h"].rps) == (0.10, 100.0)
    assert full["aa-8h"].horizon_s == 8 * 3600
    quick = {s.name for s in build_grid(quick=True)}
    assert quick == set(full)


def test_tiny_end_to_end_run_writes_rows_and_a_plot(tmp_path: Path) -> None:
    grid = [
        Scenario("aa-tiny", Family.AA, 2, horizon_s=600.0),
        Scenario(
            "err-tiny",
            Family.REGRESSION,
            2,
            horizon_s=600.0,
            regression=Regression(error_rate=0.05),
        ),
        Scenario(
            LOOP_SCENARIO,
            Family.REGRESSION,
            2,
            horizon_s=300.0,
            regression=Regression(llm_calls_per_request=2),
        ),
        Scenario(
            "drift-tiny",
            Family.DRIFT,
            1,
            share=1.0,
            onset_s=300.0,
            horizon_s=600.0,
            regression=Regression(error_rate=0.05),
        ),
    ]
    lines: list[str] = []
    json_path, plot_path = tmp_path / "rows.json", tmp_path / "plot.png"
    rows = cli.execute(grid, json_path, plot_path, processes=1, out=lines.append)
    assert {row.detector for row in rows} == {*cli.JUDGES}
    data = json.loads(json_path.read_text())
    required = {
        "detector",
        "scenario",
        "share",
        "rps",
        "runs",
        "false_alarm_rate",
        "delay_median_s",
        "delay_p90_s",
        "false_alarm_wilson_low",
        "false_alarm_wilson_high",
        "power_5min",
        "power_15min",
        "power_60min",
        "excess_failed_mean",
    }
    assert all(required <= set(row) for row in data)
    assert len(data) == 4 + 4 + 5 + 1
    by_judge = {row.detector: row for row in rows if row.scenario == LOOP_SCENARIO}
    assert by_judge.keys() == {*cli.JUDGES} - {"coalmine-drift"}
    assert PER_SPAN_COST not in {row.detector for row in rows if row.scenario == "err-tiny"}
    (loop,) = [line for line in lines if line.startswith(f"{LOOP_SCENARIO} (")]
    assert f"rolled back {by_judge['coalmine'].alarms}/2 canaries" in loop
    assert f"per span rolled back {by_judge[PER_SPAN_COST].alarms}/2" in loop
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(line.startswith("| detector |") for line in "\n".join(lines).splitlines())
    assert any("[1/4]" in line for line in lines)


def test_judge_runner_stops_at_the_first_rollback() -> None:
    scenario = Scenario("t", Family.AA, 1, horizon_s=600.0)
    stream = simulate(scenario, replication_rng(5, 0))
    windows = stream_windows(stream)
    excess = expected_failures_excess(stream).tolist()
    outcome = run_judge(FlaggerJudge(FlaggerConfig(max_error_rate=-1.0)), windows, excess)
    assert outcome.alarm_s == 300.0
    assert outcome.observations == 60
    assert outcome.excess_failed == excess[59]


def test_vectorised_kayenta_classification_matches_the_per_metric_one() -> None:
    rng = np.random.default_rng(2)
    config = KayentaConfig()
    for minutes in (3, 6, 20):
        baseline = rng.normal(size=(minutes, len(METRICS)))
        canary = rng.normal(size=(minutes, len(METRICS))) + np.linspace(0, 2, len(METRICS))
        expected = [classify_metric(canary[:, j], baseline[:, j], config) for j in range(7)]
        assert classify_metrics(canary, baseline, config) == expected
    assert any(expected) and not all(expected)
