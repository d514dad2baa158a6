"""Alerts in words: the terminal line and the webhook's body."""

from __future__ import annotations

import json

from schemas.alert import Alert
from streams.alerts.text import alert_line, chat_text, printable, webhook_body
from tests.unit.alerts.examples import drift_alert, regression_alert


def test_the_line_has_time_kind_severity_and_the_detector_s_sentence() -> None:
    assert alert_line(regression_alert()) == (
        "2026-12-02 13:01:00Z canary_regression critical: support-bot v2 vs v1: error rate 2.1% "
        "vs 1.0%, e-value 143 > threshold 100 after 11,204 canary requests; rolling back"
    )


def test_a_version_against_its_own_history() -> None:
    assert alert_line(drift_alert()) == (
        "2026-12-02 13:00:30Z cost_spike warning: support-bot v1 drifted from its own trailing "
        "history: cost per request x1.65 of its history (geometric mean), e-detector 1,204 > "
        "threshold 1,000 after 720 windows"
    )


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
    assert text == f"[CRITICAL] canary regression: {alert.message}"
