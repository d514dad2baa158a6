"""The README's SDK example runs as written and its spans reach Kafka, so the docs cannot drift."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas.topics import TRACES
from streams.settings import Settings
from tests.integration.harness import consume_spans, isolated_settings
from tests.unit.test_readme_examples import python_block

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_sdk_example_publishes_its_spans(
    kafka_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = isolated_settings(kafka_settings, tmp_path)
    for name, value in settings.as_env().items():
        monkeypatch.setenv(name, value)
    exec(compile(python_block("Tracer("), str(README), "exec"), {"__name__": "readme_example"})

    values = consume_spans(settings.kafka_bootstrap, settings.topic(TRACES), expected=4)
    spans = {json.loads(value)["name"]: json.loads(value) for value in values}
    assert set(spans) == {"answer-question", "kb", "draft", "lookup"}
    request = spans["answer-question"]
    assert (request["agent"], request["version"], request["tenant"]) == (
        "support-bot",
        "v12",
        "acme",
    )
    assert (request["task_completed"], request["quality_score"]) == (True, 0.8)
    assert spans["draft"]["parent_span_id"] == request["span_id"]
    assert spans["lookup"]["attributes"] == {"order.found": True}
