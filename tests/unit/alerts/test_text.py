"""Alerts in words: the evidence phrase, the terminal line, the webhook's body."""

from __future__ import annotations

import json

import pytest

from schemas.alert import Alert, AlertEvidence
from schemas.judgement import Metric
from streams.alerts.text import (
    alert_line,
    chat_text,
    evidence_words,
    figure,
    percent,
    printable,
    webhook_body,
)
from tests.unit.alerts.examples import drift_alert, regression_alert


def test_a_regression_reads_as_its_rates_and_its_test() -> None:
    assert evidence_words(regression_alert()) == (
        "error rate 2.1% vs 1.0%, e-value 143 > threshold 100 after 11,204 canary requests"
    )


def test_the_line_has_time_agent_versions_kind_severity_evidence_and_message() -> None:
    assert alert_line(regression_alert()) == (
        "2026-12-02 13:01:00Z support-bot v2 vs v1 canary_regression critical: error rate 2.1% "
        "vs 1.0%, e-value 143 > threshold 100 after 11,204 canary requests. canary v2 is worse "
        "than v1 on error rate: rolling back"
    )


def test_a_version_against_its_own_history_without_a_test() -> None:
    line = alert_line(drift_alert())
    assert line.startswith("2026-12-02 13:00:30Z support-bot v1 vs its own history cost_spike ")
    assert "mean log cost -4.1 vs -4.6. v1 costs 65% more" in line


@pytest.mark.parametrize(
    ("metric", "statistic", "words"),
    [
        (Metric.TOOL_ERROR_RATE, 20.0, "e-value 20 = threshold 20 after 11,204 canary tool calls"),
        (Metric.TASK_FAILURE_RATE, 3.25, "e-value 3.25 < threshold 20 after 11,204 canary tasks"),
        (Metric.QUALITY_MEAN, 2.5e7, "e-value 2.5e+07 > threshold 20 after 11,204 canary requests"),
    ],
)
def test_the_test_is_said_in_the_metric_s_units(
    metric: Metric, statistic: float, words: str
) -> None:
    alert = regression_alert().model_copy(
        update={
            "metric": metric,
            "evidence": AlertEvidence(
                statistic=statistic, threshold=20, n_baseline=1, n_canary=11_204
            ),
        }
    )
    assert evidence_words(alert).endswith(words)


def test_approvals_asked_read_as_a_number_per_request_not_a_share() -> None:
    alert = regression_alert().model_copy(
        update={"metric": Metric.APPROVAL_RATE, "observed": 1.25, "baseline": 0.05}
    )
    assert evidence_words(alert).startswith("approvals asked per request 1.25 vs 0.05, e-value")


def test_an_alert_with_no_figures_is_its_message() -> None:
    bare = Alert.model_validate(
        {**drift_alert().model_dump(), "metric": None, "observed": None, "baseline": None}
    )
    assert evidence_words(bare) == ""
    assert alert_line(bare).endswith("cost_spike warning: " + bare.message)


@pytest.mark.parametrize(
    ("share", "text"), [(0.021, "2.1%"), (0.01, "1.0%"), (0.00012, "0.012%"), (0.0, "0.0%")]
)
def test_percentages(share: float, text: str) -> None:
    assert percent(share) == text


@pytest.mark.parametrize(
    ("value", "text"), [(143.4, "143"), (11_204, "11,204"), (3.25, "3.25"), (0.5, "0.5")]
)
def test_figures(value: float, text: str) -> None:
    assert figure(value) == text


def test_a_message_cannot_break_the_line_or_drive_the_terminal() -> None:
    hostile = regression_alert().model_copy(update={"message": "ok\n\x1b[2Jgone\r\x07"})
    line = alert_line(hostile)
    assert "\n" not in line and "\x1b" not in line and "\r" not in line
    assert line.endswith("ok  [2Jgone  ")
    assert printable("tab\there") == "tab here"


def test_the_webhook_body_is_the_alert_and_a_chat_text() -> None:
    alert = regression_alert()
    body = json.loads(webhook_body(alert))
    text = body.pop("text")
    assert Alert.model_validate(body) == alert
    assert text == chat_text(alert)
    assert text.startswith("[CRITICAL] canary regression: support-bot v2 vs v1. error rate 2.1%")
