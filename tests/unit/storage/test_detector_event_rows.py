"""The rows of coalmine.judgements, alerts and rollbacks, built from events (no ClickHouse)."""

from __future__ import annotations

import json

from schemas.judgement import Judgement, Verdict
from streams.storage.detector_events import (
    ALERTS_TABLE,
    JUDGEMENTS_TABLE,
    ROLLBACKS_TABLE,
    alert_row,
    judgement_row,
    rollback_row,
)
from tests.unit.alerts.examples import drift_alert, judgement, regression_alert, rollback_request


def test_a_judgement_row_holds_each_metric_s_evidence_side_by_side() -> None:
    judged = judgement(60, Verdict.ROLLBACK, e_value=143.0, n=11_204)
    row = dict(zip(JUDGEMENTS_TABLE.columns, judgement_row(judged, 7), strict=True))
    assert (row["agent"], row["id"], row["rollout_id"], row["verdict"]) == (
        "support-bot", "judgement-cmd-1-60", "cmd-1", "rollback",
    )  # fmt: skip
    assert row["metrics.metric"] == ["error_rate", "quality_mean"]
    assert row["metrics.verdict"] == ["rollback", "continue"]
    assert row["metrics.e_value"] == [143.0, 0.5]
    assert row["metrics.cs_upper"] == [None, None]
    assert row["metrics.n_canary"] == [11_204, 11_204]
    assert row["parameters"] == {"alpha_rollback": 0.01, "horizon_s": 600.0}
    assert Judgement.model_validate_json(row["judgement"]) == judged
    assert row["kafka_offset"] == 7


def test_a_judgement_before_any_data_has_no_effect_or_bounds() -> None:
    row = dict(
        zip(
            JUDGEMENTS_TABLE.columns,
            judgement_row(judgement(5, Verdict.CONTINUE, n=0), 0),
            strict=True,
        )
    )
    assert row["metrics.effect"] == [None, None]
    assert row["metrics.cs_lower"] == [None, None]


def test_an_alert_row_flattens_its_evidence() -> None:
    row = dict(zip(ALERTS_TABLE.columns, alert_row(regression_alert(), 3), strict=True))
    assert (row["version"], row["baseline_version"], row["metric"]) == ("v2", "v1", "error_rate")
    assert (row["statistic"], row["threshold"], row["n_observed"]) == (143.2, 100.0, 11_204)
    assert (row["kind"], row["severity"], row["generation"]) == ("canary_regression", "critical", 1)
    assert json.loads(row["alert"])["id"] == "alert-1"


def test_an_alert_about_a_version_s_own_history_has_empty_baseline_and_rollout() -> None:
    row = dict(zip(ALERTS_TABLE.columns, alert_row(drift_alert(), 0), strict=True))
    assert (row["baseline_version"], row["rollout_id"], row["generation"]) == ("", "", None)
    assert (row["statistic"], row["n_baseline"]) == (None, None)


def test_a_rollback_row() -> None:
    row = dict(zip(ROLLBACKS_TABLE.columns, rollback_row(rollback_request(), 2), strict=True))
    assert (row["from_version"], row["to_version"], row["alert_ids"]) == ("v2", "", ["alert-1"])
    assert (row["issued_by"], row["kafka_offset"]) == ("detector", 2)
