"""Alerts in words, pure: the line ``coalmine alerts`` prints and the webhook's JSON body with
its chat-friendly ``text``. Both say the detector's message, which holds the evidence in
words ("support-bot v2 vs v1: error rate 2.1% vs 1.0%, e-value 143 > threshold 100 after
11,204 canary requests; rolling back", :mod:`streams.detector.events`), once.

Text that came from the topic (the detector's message) is printed with its control
characters replaced: a line stays one line, and a message cannot drive the terminal.
"""

from __future__ import annotations

import json
import unicodedata
from datetime import UTC
from typing import Final

from schemas.alert import Alert, AlertKind


def printable(text: str) -> str:
    """``text`` with every control character (newlines, escapes) replaced by a space."""
    return "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)


def alert_line(alert: Alert) -> str:
    """One line for a terminal: time (UTC), kind, severity and the detector's message (which
    names the agent and the versions compared)."""
    when = alert.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return f"{when} {alert.kind.value} {alert.severity.value}: {printable(alert.message)}"


KIND_TITLES: Final = {
    AlertKind.CANARY_REGRESSION: "canary regression",
    AlertKind.DRIFT: "drift",
    AlertKind.COST_SPIKE: "cost spike",
    AlertKind.GATE_FAILED: "evaluation gate failed",
    AlertKind.INCONCLUSIVE: "inconclusive canary",
}


def chat_text(alert: Alert) -> str:
    """The webhook's ``text``: what a chat channel shows, severity first."""
    return f"[{alert.severity.value.upper()}] {KIND_TITLES[alert.kind]}: {printable(alert.message)}"


def webhook_body(alert: Alert) -> bytes:
    """The JSON a webhook receives: every field of the alert, and ``text``."""
    document = alert.model_dump(mode="json")
    document["text"] = chat_text(alert)
    return json.dumps(document, ensure_ascii=False, allow_nan=False).encode()
