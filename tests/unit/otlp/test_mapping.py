"""The OTel span → trace event mapping, table by table, and what it refuses."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.trace import MAX_ATTRIBUTES, MAX_EVENT_BYTES, SpanKind, SpanStatus, TraceEvent
from streams.otlp.mapping import (
    DROPPED_ATTRIBUTES,
    EVENT_ID_NAMESPACE,
    MappingRules,
    OtelSpan,
    SpanRejectedError,
    event_id_of,
    map_span,
    map_spans,
)

TRACE = "5b8efff798038103d269b633813fc60c"
ROOT = "eee19b7ec3c1b174"
CHILD = "eee19b7ec3c1b175"
RESOURCE = {"service.name": "support-bot", "service.version": "v12"}
START = 1_764_000_000_000_000_000
RULES = MappingRules()


def span(
    attributes: dict[str, Any] | None = None,
    *,
    parent: str | None = ROOT,
    span_id: str = CHILD,
    resource: dict[str, Any] | None = None,
    **changes: Any,
) -> OtelSpan:
    base = OtelSpan(
        trace_id=TRACE,
        span_id=span_id,
        parent_span_id=parent,
        name="step",
        start_unix_nano=START,
        end_unix_nano=START + 250_000_000,
        attributes=attributes or {},
        resource=RESOURCE if resource is None else resource,
    )
    return replace(base, **changes)


def mapped(attributes: dict[str, Any] | None = None, **kwargs: Any) -> TraceEvent:
    return map_span(span(attributes, **kwargs), RULES)


def rejected(attributes: dict[str, Any] | None = None, **kwargs: Any) -> str:
    with pytest.raises(SpanRejectedError) as caught:
        map_span(span(attributes, **kwargs), RULES)
    return str(caught.value)


@pytest.mark.parametrize(
    ("operation", "kind"),
    [
        ("invoke_agent", SpanKind.REQUEST),
        ("chat", SpanKind.LLM),
        ("text_completion", SpanKind.LLM),
        ("generate_content", SpanKind.LLM),
        ("embeddings", SpanKind.LLM),
        ("execute_tool", SpanKind.TOOL),
        ("retrieval", SpanKind.RETRIEVAL),
        ("create_agent", SpanKind.CUSTOM),
        ("plan", SpanKind.CUSTOM),
    ],
)
def test_each_operation_name_has_its_kind(operation: str, kind: SpanKind) -> None:
    event = mapped({"gen_ai.operation.name": operation})
    assert event.kind is kind
    assert event.attributes["gen_ai.operation.name"] == operation


@pytest.mark.parametrize(
    ("oi_kind", "kind"),
    [
        ("AGENT", SpanKind.REQUEST),
        ("LLM", SpanKind.LLM),
        ("EMBEDDING", SpanKind.LLM),
        ("TOOL", SpanKind.TOOL),
        ("RETRIEVER", SpanKind.RETRIEVAL),
        ("RERANKER", SpanKind.RETRIEVAL),
        ("GUARDRAIL", SpanKind.GUARDRAIL),
        ("EVALUATOR", SpanKind.EVAL),
        ("CHAIN", SpanKind.CUSTOM),
        ("PROMPT", SpanKind.CUSTOM),
        ("SOMETHING_NEW", SpanKind.CUSTOM),
    ],
)
def test_each_openinference_kind_has_its_kind(oi_kind: str, kind: SpanKind) -> None:
    assert mapped({"openinference.span.kind": oi_kind}).kind is kind


def test_the_root_span_is_the_request_whatever_it_does() -> None:
    assert mapped({"gen_ai.operation.name": "chat"}, parent=None).kind is SpanKind.REQUEST
    assert mapped({}, parent=None).kind is SpanKind.REQUEST
    assert mapped({}).kind is SpanKind.CUSTOM


def test_current_genai_attributes() -> None:
    event = mapped(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
            "gen_ai.usage.input_tokens": 812,
            "gen_ai.usage.output_tokens": 96,
            "gen_ai.usage.cache_read.input_tokens": 512,
            "gen_ai.usage.reasoning.output_tokens": 40,
        }
    )
    assert (event.provider, event.model) == ("openai", "gpt-4o-mini")
    assert (event.input_tokens, event.output_tokens) == (812, 96)
    assert (event.cached_input_tokens, event.reasoning_tokens) == (512, 40)
    assert event.attributes["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert "gen_ai.usage.input_tokens" not in event.attributes


def test_the_older_genai_attributes() -> None:
    event = mapped(
        {
            "gen_ai.system": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4",
            "gen_ai.usage.prompt_tokens": 120,
            "gen_ai.usage.completion_tokens": 30,
        }
    )
    assert (event.provider, event.model, event.input_tokens, event.output_tokens) == (
        "anthropic",
        "claude-sonnet-4",
        120,
        30,
    )


def test_the_newer_name_wins_when_both_generations_are_sent() -> None:
    event = mapped(
        {
            "gen_ai.system": "az.ai.inference",
            "gen_ai.provider.name": "openai",
            "gen_ai.usage.prompt_tokens": 1,
            "gen_ai.usage.input_tokens": 2,
        }
    )
    assert (event.provider, event.input_tokens) == ("openai", 2)


def test_openinference_attributes() -> None:
    event = mapped(
        {
            "openinference.span.kind": "LLM",
            "llm.provider": "openai",
            "llm.model_name": "gpt-4o",
            "llm.token_count.prompt": 300,
            "llm.token_count.completion": 50,
            "llm.token_count.prompt_details.cache_read": 100,
            "llm.token_count.completion_details.reasoning": 20,
            "llm.cost.total": 0.0042,
            "llm.input_messages.0.message.content": "my card number is ...",
            "input.value": "a prompt",
        }
    )
    assert (event.kind, event.provider, event.model) == (SpanKind.LLM, "openai", "gpt-4o")
    assert (event.input_tokens, event.output_tokens) == (300, 50)
    assert (event.cached_input_tokens, event.reasoning_tokens) == (100, 20)
    assert event.cost_usd == 0.0042
    # Prompts and completions are never kept.
    assert not any(key.startswith(("llm.input", "input.")) for key in event.attributes)


def test_tool_names_of_both_conventions() -> None:
    assert mapped({"gen_ai.tool.name": "lookup_order"}).tool_name == "lookup_order"
    assert mapped({"tool.name": "WeatherAPI"}).tool_name == "WeatherAPI"


def test_gemini_providers_are_priced_as_google() -> None:
    assert mapped({"gen_ai.provider.name": "gcp.gemini"}).provider == "google"
    assert mapped({"gen_ai.system": "vertex_ai"}).provider == "google"


def test_errors_from_status_error_type_and_exception_event() -> None:
    event = mapped({"error.type": "timeout"}, status_code=2, status_message="deadline exceeded")
    assert (event.status, event.error_type, event.error_message) == (
        SpanStatus.ERROR,
        "timeout",
        "deadline exceeded",
    )
    from_exception = mapped(
        status_code=2,
        exception={"exception.type": "TimeoutError", "exception.message": "search timed out"},
    )
    assert (from_exception.error_type, from_exception.error_message) == (
        "TimeoutError",
        "search timed out",
    )
    # error.type alone means the operation failed (semantic conventions).
    assert mapped({"error.type": "500"}).status is SpanStatus.ERROR
    ok = mapped(status_code=1, exception={"exception.type": "Handled"})
    assert (ok.status, ok.error_type) == (SpanStatus.OK, None)


def test_quality_outcome_tenant_and_environment_from_documented_attributes() -> None:
    event = mapped(
        {
            "gen_ai.operation.name": "invoke_agent",
            "coalmine.quality_score": 0.8,
            "coalmine.task_completed": True,
            "coalmine.tenant": "acme",
        },
        resource={**RESOURCE, "deployment.environment.name": "staging"},
    )
    assert (event.quality_score, event.task_completed) == (0.8, True)
    assert (event.tenant, event.environment) == ("acme", "staging")
    assert mapped().environment == "production"


def test_agent_and_version_from_the_span_then_its_ancestors_then_the_resource() -> None:
    agent = span(
        {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage"},
        parent=None,
        span_id=ROOT,
    )
    chat = span({"gen_ai.operation.name": "chat"})
    result = map_spans([chat, agent], RULES)
    assert [(e.agent, e.version) for e in result.events] == [("triage", "v12")] * 2
    alone = map_spans([chat], RULES).events[0]
    assert (alone.agent, alone.version) == ("support-bot", "v12")
    own = mapped({"gen_ai.agent.name": "billing", "gen_ai.agent.version": "2025-05-01"})
    assert (own.agent, own.version) == ("billing", "2025-05-01")
    assert "gen_ai.agent.name" not in own.attributes


def test_the_attributes_naming_agent_and_version_are_configurable() -> None:
    rules = MappingRules(agent_keys=("app.agent",), version_keys=("app.release",))
    event = map_span(span({"app.agent": "a", "app.release": 7}), rules)
    assert (event.agent, event.version) == ("a", "7")


@pytest.mark.parametrize(
    ("resource", "attributes", "missing"),
    [
        ({}, {}, "no agent"),
        ({"service.name": "unknown_service:python", "service.version": "1"}, {}, "no agent"),
        ({"service.name": "support-bot"}, {}, "no version"),
        ({"service.name": "support-bot", "service.version": True}, {}, "no version"),
    ],
)
def test_a_span_without_agent_or_version_is_rejected_saying_what_to_set(
    resource: dict[str, Any], attributes: dict[str, Any], missing: str
) -> None:
    reason = rejected(attributes, resource=resource)
    assert reason.startswith(missing) and "service.name" in reason


def test_event_ids_are_derived_from_trace_and_span_id() -> None:
    first, again = mapped(), mapped()
    assert first.event_id == again.event_id == event_id_of(TRACE, CHILD)
    assert first.model_dump_json() == again.model_dump_json()  # a retry is the same message
    assert mapped(span_id=ROOT, parent=None).event_id != first.event_id
    assert str(first.event_id) == str(first.event_id).lower() and first.event_id.int != 0
    assert event_id_of(TRACE.upper(), CHILD) == first.event_id
    assert first.event_id == uuid.uuid5(EVENT_ID_NAMESPACE, f"{TRACE}/{CHILD}")


def test_times_are_utc_microseconds() -> None:
    event = mapped(start_unix_nano=START + 1_999, end_unix_nano=START + 2_000_000)
    assert event.start_time == datetime.fromtimestamp(START // 10**9, UTC).replace(microsecond=1)
    assert event.duration_ms == pytest.approx(1.999)


@pytest.mark.parametrize(
    ("attributes", "changes", "reason"),
    [
        ({}, {"trace_id": "00" * 16}, "trace_id must be 16 bytes"),
        ({}, {"trace_id": "abcd"}, "trace_id must be 16 bytes"),
        ({}, {"span_id": "00" * 8}, "span_id must be 8 bytes"),
        ({}, {"parent_span_id": "ab"}, "parent_span_id"),
        ({}, {"start_unix_nano": 0}, "no start time"),
        ({}, {"end_unix_nano": START - 1}, "end_time is before start_time"),
        ({}, {"name": ""}, "name"),
        ({}, {"name": "evil\x1b[2Jname"}, "name: must show a visible character"),
        ({"gen_ai.usage.input_tokens": -5}, {}, "input_tokens"),
        ({"gen_ai.usage.input_tokens": 10**12}, {}, "input_tokens"),
        ({"gen_ai.usage.input_tokens": "12"}, {}, "must be a whole number"),
        ({"gen_ai.usage.input_tokens": True}, {}, "must be a whole number"),
        (
            {"gen_ai.usage.input_tokens": 10, "gen_ai.usage.cache_read.input_tokens": 20},
            {},
            "cached",
        ),
        ({"gen_ai.request.model": 4}, {}, "must be a string"),
        ({"gen_ai.request.model": "x" * 500}, {}, "model"),
        ({"coalmine.quality_score": 1.5}, {"parent_span_id": None}, "quality_score"),
        ({"coalmine.quality_score": float("nan")}, {"parent_span_id": None}, "quality_score"),
        ({"coalmine.quality_score": 0.5}, {}, "belong on request or eval spans"),
        ({"coalmine.task_completed": "yes"}, {}, "must be a boolean"),
        ({"gen_ai.provider.name": "open\u202eai"}, {}, "provider"),
        ({"gen_ai.tool.name": "\ud800"}, {}, "tool"),
    ],
)
def test_hostile_or_broken_spans_are_rejected_with_a_reason(
    attributes: dict[str, Any], changes: dict[str, Any], reason: str
) -> None:
    assert reason in rejected(attributes, **changes)


def test_one_bad_span_does_not_take_the_others_with_it() -> None:
    good, bad = span(), span({"gen_ai.usage.output_tokens": -1}, span_id=ROOT, parent=None)
    result = map_spans([good, bad], RULES)
    assert [e.span_id for e in result.events] == [CHILD]
    assert [(r.span_id, r.reason.split(":")[0]) for r in result.rejections] == [
        (ROOT, "output_tokens")
    ]


def test_a_span_sent_twice_in_one_request_is_one_event_and_a_conflict_is_rejected() -> None:
    result = map_spans([span(), span(), span(name="other")], RULES)
    assert len(result.events) == 1
    assert [r.reason for r in result.rejections] == [
        "this span id is in the request twice, with other content"
    ]


def test_a_cycle_of_parents_does_not_loop() -> None:
    a = span(span_id=ROOT, parent=CHILD)
    b = span(span_id=CHILD, parent=ROOT)
    assert len(map_spans([a, b], RULES).events) == 2


def test_other_attributes_are_kept_within_the_events_bounds() -> None:
    hostile: dict[str, Any] = {
        "ok.small": 1,
        "ok.text": "y" * 5000,
        "bad key with spaces": "x",
        "k" * 65: "too long a key",
        "ok.inf": float("inf"),
        "ok.list": '["stop","length"]',
    }
    hostile.update({f"many.{i:03}": "v" * 900 for i in range(100)})
    event = mapped(hostile)
    assert len(event.attributes) <= MAX_ATTRIBUTES
    assert event.attributes["ok.small"] == 1
    assert event.attributes["ok.text"] == "y" * 1023 + "…"
    assert event.attributes["ok.list"] == '["stop","length"]'
    assert "bad key with spaces" not in event.attributes and "ok.inf" not in event.attributes
    dropped = event.attributes[DROPPED_ATTRIBUTES]
    assert isinstance(dropped, int) and dropped == len(hostile) - (len(event.attributes) - 1)
    assert len(event.model_dump_json().encode()) < MAX_EVENT_BYTES


def test_the_largest_possible_event_still_fits_a_message() -> None:
    escaped = "\x01" * 5000  # each control character is six bytes of JSON
    event = mapped(
        {f"k{i}": escaped for i in range(40)} | {"error.type": "E" * 300},
        name="n" * 1000,
        status_code=2,
        status_message=escaped,
    )
    assert len(event.model_dump_json().encode()) < MAX_EVENT_BYTES
    assert json.loads(event.model_dump_json())["error_type"] == "E" * 127 + "…"
