"""Alerts in words, pure: the evidence of an alert as a phrase ("error rate 2.1% vs 1.0%,
e-value 143 > threshold 100 after 11,204 canary requests"), the line ``coalmine alerts``
prints, and the webhook's JSON body with its chat-friendly ``text``.

Text that came from the topic (the detector's message) is printed with its control
characters replaced: a line stays one line, and a message cannot drive the terminal.
"""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC
from typing import Final

from schemas.alert import Alert, AlertKind
from schemas.judgement import COUNT_PER_TRIAL_METRICS, RATE_METRICS, Metric

METRIC_WORDS: Final = {
    Metric.ERROR_RATE: "error rate",
    Metric.TASK_FAILURE_RATE: "task failure rate",
    Metric.TOOL_ERROR_RATE: "tool error rate",
    Metric.APPROVAL_RATE: "approvals asked per request",
    Metric.LATENCY_P95_EXCEEDANCE: "share slower than the baseline's p95",
    Metric.LATENCY_P99_EXCEEDANCE: "share slower than the baseline's p99",
    Metric.LATENCY_LOG_MEAN: "mean log latency",
    Metric.LOG_COST_MEAN: "mean log cost",
    Metric.QUALITY_MEAN: "mean quality",
}
OBSERVATIONS: Final = {Metric.TOOL_ERROR_RATE: "tool calls", Metric.TASK_FAILURE_RATE: "tasks"}
"""What a metric's sample sizes count, when not requests."""


def printable(text: str) -> str:
    """``text`` with every control character (newlines, escapes) replaced by a space."""
    return "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)


def percent(share: float) -> str:
    """0.021 → ``2.1%``, 0.01 → ``1.0%``, 0.00012 → ``0.012%``."""
    value = share * 100
    return f"{value:.1f}%" if value == 0 or abs(value) >= 1 else f"{value:.2g}%"


def figure(value: float) -> str:
    """143.4 → ``143``, 11204 → ``11,204``, 3.25 → ``3.25``, 2.5e7 → ``2.5e+07``."""
    if abs(value) >= 1e6:
        return f"{value:.3g}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _value(metric: Metric, value: float) -> str:
    is_share = metric in RATE_METRICS and metric not in COUNT_PER_TRIAL_METRICS
    return percent(value) if is_share else figure(value)


def evidence_words(alert: Alert) -> str:
    """The figures behind ``alert`` in words; empty when it carries none."""
    parts = []
    metric = alert.metric
    if metric is not None:
        words = METRIC_WORDS[metric]
        if alert.observed is not None and alert.baseline is not None:
            words += f" {_value(metric, alert.observed)} vs {_value(metric, alert.baseline)}"
        elif alert.observed is not None:
            words += f" {_value(metric, alert.observed)}"
        parts.append(words)
    evidence = alert.evidence
    if evidence is not None:
        statistic, threshold = evidence.statistic, evidence.threshold
        relation = ">" if statistic > threshold else "=" if statistic == threshold else "<"
        unit = OBSERVATIONS.get(metric, "requests") if metric is not None else "requests"
        whose = "canary " if alert.baseline_version is not None else ""
        parts.append(
            f"e-value {figure(statistic)} {relation} threshold {figure(threshold)} "
            f"after {evidence.n_canary:,} {whose}{unit}"
        )
    return ", ".join(parts)


def _subject(alert: Alert) -> str:
    compared = alert.baseline_version or "its own history"
    return f"{alert.agent} {alert.version} vs {compared}"


def alert_line(alert: Alert) -> str:
    """One line for a terminal: time (UTC), agent, version vs baseline, kind, severity, the
    evidence in words and the detector's message."""
    when = alert.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    head = f"{when} {_subject(alert)} {alert.kind.value} {alert.severity.value}"
    return f"{head}: {_body(alert)}"


def _body(alert: Alert) -> str:
    evidence = evidence_words(alert)
    message = printable(alert.message)
    return f"{evidence}. {message}" if evidence else message


KIND_TITLES: Final = {
    AlertKind.CANARY_REGRESSION: "canary regression",
    AlertKind.DRIFT: "drift",
    AlertKind.COST_SPIKE: "cost spike",
    AlertKind.GATE_FAILED: "evaluation gate failed",
    AlertKind.INCONCLUSIVE: "inconclusive canary",
}


def chat_text(alert: Alert) -> str:
    """The webhook's ``text``: what a chat channel shows, severity first."""
    return f"[{alert.severity.value.upper()}] {KIND_TITLES[alert.kind]}: {_subject(alert)}. " + (
        _body(alert)
    )


def webhook_body(alert: Alert) -> bytes:
    """The JSON a webhook receives: every field of the alert, and ``text``."""
    document = alert.model_dump(mode="json")
    document["text"] = chat_text(alert)
    return json.dumps(document, ensure_ascii=False, allow_nan=False).encode()
