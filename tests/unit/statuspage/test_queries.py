from __future__ import annotations

import json
from typing import Any

import pytest

from schemas.judgement import Metric
from streams.statuspage.queries import (
    agent_list,
    iso,
    judge_evidence,
    pass_bound,
    per_minute,
)


def deployment(agent: str, **fields: Any) -> dict[str, Any]:
    return {
        "agent": agent,
        "generation": 3,
        "phase": "canary",
        "stable_version": "v1",
        "canary_version": "v2",
        "canary_weight": 0.25,
        "step_index": 1,
        "rollout_id": "cli-1",
        "updated_at": "2026-12-02 10:00:00.000",
        "cause": "step",
        "plan": json.dumps({"steps": [{"weight": 0.1}, {"weight": 0.25}, {"weight": 1.0}]}),
        **fields,
    }


def test_iso_marks_clickhouse_utc_times() -> None:
    assert iso("2026-12-02 16:52:40.123") == "2026-12-02T16:52:40.123Z"


def test_the_agent_list_has_deployed_agents_with_their_verdict_then_agents_with_traffic() -> None:
    listed = agent_list(
        [deployment("b-bot"), deployment("a-bot", canary_version="", plan="", rollout_id="")],
        {"b-bot": {"verdict": "alert", "verdict_at": "2026-12-02 10:00:05.000"}},
        ["c-bot", "b-bot"],
    )
    assert [a["agent"] for a in listed] == ["a-bot", "b-bot", "c-bot"]
    a_bot, b_bot, c_bot = listed
    assert (a_bot["canary_version"], a_bot["steps"], a_bot["rollout_id"], a_bot["verdict"]) == (
        None, None, None, None,
    )  # fmt: skip
    assert (b_bot["steps"], b_bot["step_index"], b_bot["verdict"], b_bot["verdict_at"]) == (
        3, 1, "alert", "2026-12-02T10:00:05.000Z",
    )  # fmt: skip
    assert b_bot["updated_at"] == "2026-12-02T10:00:00.000Z"
    assert c_bot["phase"] is None and set(c_bot) == set(b_bot)


def minute_row(version: str, minute: int, requests: int, **fields: Any) -> dict[str, Any]:
    return {
        "version": version,
        "minute": minute,
        "requests": requests,
        "errors": 0,
        "cost_usd": 0.0,
        "quality_count": 0,
        "quality_sum": 0.0,
        "latency_p95_ms": None,
        **fields,
    }


def test_series_share_one_minute_axis_with_nulls_where_a_version_has_no_row() -> None:
    rows = [
        minute_row("v1", 60, 100, errors=2, cost_usd=0.5, quality_count=4, quality_sum=3.0,
                   latency_p95_ms=812.0),
        minute_row("v0", 60, 5),
        minute_row("v1", 120, 0),
        minute_row("v2", 120, 10, errors=1, cost_usd=0.1),
    ]  # fmt: skip
    shaped = per_minute(rows, deployment("bot"))
    assert shaped["minute"] == [60, 120]
    assert [(v["version"], v["role"]) for v in shaped["versions"]] == [
        ("v1", "stable"), ("v2", "canary"), ("v0", "other"),
    ]  # fmt: skip
    stable, canary, _ = shaped["versions"]
    assert stable["requests"] == [100, 0]
    assert stable["error_rate"] == [0.02, None]  # no requests: no rate
    assert stable["cost_per_request_usd"] == [0.005, None]
    assert stable["quality_mean"] == [0.75, None]
    assert stable["latency_p95_ms"] == [812.0, None]
    assert canary["requests"] == [None, 10] and canary["error_rate"] == [None, 0.1]
    assert canary["quality_mean"] == [None, None]  # nothing scored


def test_without_a_deployment_every_version_is_other() -> None:
    shaped = per_minute([minute_row("v1", 60, 1)], None)
    assert (shaped["stable_version"], shaped["versions"][0]["role"]) == (None, "other")
    assert per_minute([], None)["versions"] == []


def test_the_pass_bound_is_on_the_good_side_of_the_effect() -> None:
    assert pass_bound(Metric.ERROR_RATE, 1.25) == 1.25
    assert pass_bound(Metric.LOG_COST_MEAN, 0.0953) == 0.0953
    assert pass_bound(Metric.QUALITY_MEAN, 0.02) == -0.02
    assert pass_bound(Metric.ERROR_RATE, None) is None


def judgement_row(t: float, verdict: str, metrics: dict[str, list[Any]]) -> dict[str, Any]:
    """One judgement row as the query returns it: parallel arrays per metric column."""
    names = list(metrics)
    columns = ("effect", "cs_lower", "cs_upper", "e_value", "threshold", "tolerance")
    return {
        "t": t,
        "time": "2026-12-02 10:00:00.000",
        "generation": 2,
        "verdict": verdict,
        "windows_compared": int(t),
        "explanation": f"{verdict} at {t}",
        "stable_version": "v1",
        "canary_version": "v2",
        "metric": names,
        **{c: [metrics[n][i] for n in names] for i, c in enumerate(columns)},
        "metric_verdict": [metrics[n][6] for n in names],
        "metric_explanation": [f"{n} at {t}" for n in names],
    }


def test_judgements_become_a_verdict_strip_and_one_series_per_metric() -> None:
    rows = [
        judgement_row(
            1.0,
            "continue",
            {
                "quality_mean": [None, None, None, 1.0, 400.0, 0.02, "continue"],
                "error_rate": [None, None, None, 1.0, 800.0, 1.25, "continue"],
                "metric_from_the_future": [1, 1, 1, 1, 1, 1, "continue"],
            },
        ),
        judgement_row(
            2.0,
            "rollback",
            {
                "error_rate": [3.0, 1.2, 7.4, 1335.0, 800.0, 1.25, "rollback"],
                "quality_mean": [0.01, -0.02, 0.03, 0.1, 400.0, 0.02, "pass"],
            },
        ),
    ]
    shaped = judge_evidence(rows)
    assert [v["verdict"] for v in shaped["verdicts"]] == ["continue", "rollback"]
    assert shaped["verdicts"][1]["explanation"] == "rollback at 2.0"
    assert (shaped["stable_version"], shaped["canary_version"]) == ("v1", "v2")
    error_rate, quality = shaped["metrics"]  # in the order of Metric; unknown ones left out
    assert (error_rate["metric"], error_rate["kind"], error_rate["no_effect"]) == (
        "error_rate", "rate", 1.0,
    )  # fmt: skip
    assert error_rate["t"] == [1.0, 2.0]
    assert error_rate["effect"] == [None, 3.0] and error_rate["cs_upper"] == [None, 7.4]
    assert error_rate["e_value"] == [1.0, 1335.0] and error_rate["threshold"] == [800.0] * 2
    assert error_rate["pass_bound"] == [1.25, 1.25] and error_rate["worse"] == "higher"
    assert error_rate["verdict"] == ["continue", "rollback"]
    assert error_rate["explanation"] == "error_rate at 2.0"
    assert (error_rate["label"], quality["label"]) == ("error rate", "mean quality")
    assert (quality["kind"], quality["worse"], quality["pass_bound"]) == (
        "mean", "lower", [pytest.approx(-0.02)] * 2,
    )  # fmt: skip


def test_no_judgement_yet_is_empty() -> None:
    assert judge_evidence([]) == {
        "stable_version": None,
        "canary_version": None,
        "verdicts": [],
        "metrics": [],
    }
