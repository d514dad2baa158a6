"""The README's SDK and routing examples run as written and their spans reach Kafka, so the
docs cannot drift."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.topics import TRACES
from streams.devtools.control_records import ControlWriter, example_version, rollout_state
from streams.settings import Settings
from streams.topics import ensure_topics
from streams.versions.load import parse_version_file
from tests.integration.controller_harness import coalmine
from tests.integration.harness import consume_spans, isolated_settings
from tests.integration.test_approvals import requests_on_topic
from tests.unit.test_readme_examples import python_block

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
EXAMPLES = README.parent / "examples" / "versions"


def test_readme_sdk_example_publishes_its_spans(
    kafka_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = isolated_settings(kafka_settings, tmp_path)
    for name, value in settings.as_env().items():
        monkeypatch.setenv(name, value)
    exec(
        compile(python_block('tenant="acme"'), str(README), "exec"), {"__name__": "readme_example"}
    )

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


def test_readme_routing_example_runs_the_deployed_version_with_its_bundle(
    kafka_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = isolated_settings(kafka_settings, tmp_path)
    ensure_topics(settings)
    v12, v13 = example_version("support-bot", "v12"), example_version("support-bot", "v13")
    with ControlWriter(settings) as writer:
        writer.version(v12)
        writer.version(v13)
        writer.state(rollout_state(v12, v13, weight=1.0, rollout_id="d1", generation=2))
    for name, value in settings.as_env().items():
        monkeypatch.setenv(name, value)
    exec(
        compile(python_block("route_key=user_id"), str(README), "exec"),
        {"__name__": "readme_example"},
    )

    values = consume_spans(settings.kafka_bootstrap, settings.topic(TRACES), expected=4)
    spans = [json.loads(value) for value in values]
    assert {(s["name"], s["version"]) for s in spans} == {
        ("answer-question", "v13"),
        ("draft", "v13"),
    }
    assert {s["model"] for s in spans if s["name"] == "draft"} == {v13.bundle.model.model}


def test_readme_approval_example_waits_for_the_person_and_runs_the_refund(
    kafka_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = isolated_settings(kafka_settings, tmp_path)
    ensure_topics(settings)
    v3 = parse_version_file(
        (EXAMPLES / "support-bot-v3.yaml").read_bytes(), "support-bot-v3.yaml"
    ).as_version(datetime.now(UTC), "test")
    with ControlWriter(settings) as writer:
        writer.version(v3)
        writer.state(rollout_state(v3, None, weight=0.0, rollout_id="d1", generation=1))
    for name, value in settings.as_env().items():
        monkeypatch.setenv(name, value)
    namespace: dict[str, object] = {"__name__": "readme_example"}
    example = compile(python_block("call_tool("), str(README), "exec")
    agent = threading.Thread(target=exec, args=(example, namespace))
    agent.start()
    (request,) = requests_on_topic(settings, 1)
    assert request.arguments == {
        "order_id": "20261202",
        "amount_cents": 25000,
        "note": "[redacted]",
    }
    assert namespace.get("outcome") is None  # held
    approved = coalmine(settings, "approvals", "approve", request.id, "--reason", "verified")
    assert approved.returncode == 0, approved.stderr
    agent.join(60)
    assert namespace["outcome"] == "refunded 25000 cents of order 20261202"
